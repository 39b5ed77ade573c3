"""The backbones a CMIC encoder can stand on, one module per family."""
