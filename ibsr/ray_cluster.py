"""What the Ray index build (`indexer/ray_backend.py`) and the Ray evaluation
(`eval/ray_eval.py`) both need to start, size and talk to Ray: joining or starting an instance
(`ray_session`), the encoder actor pool sized to the cluster (`encoder_pool`, `cluster_cpus`),
the driver's model shipped to the actors through the object store (`model_payload`,
`load_model`), and Ray Data run in input order (`ordered_pipeline`, `from_items`).

Ray itself is imported only inside these functions: `pip install 'ibsr[ray]'` is optional, and
`import_ray` says how to install it when a command asks for `--ray`.
"""

from __future__ import annotations

import inspect
import logging
import warnings

from ibsr.errors import IbsrError

LOCAL = "local"  # --ray without an address: start a Ray instance on this machine for the command
INSTALL_HINT = "pip install 'ibsr[ray]' (or: pip install 'ray[data]>=2.9')"
CPU_ENCODERS_PER_CPUS = 8  # CPU-only clusters: one encoder actor per 8 CPUs (at least 1)
# Memory reserved per render / photo-decoding task. Besides being about what one needs, it
# keeps Ray Data from fusing these CPU tasks into the encoder actors (it fuses a task map into
# the next actor map when their resource requests are equal), which would serialize them.
TASK_MEMORY = 256 * 2 ** 20


def import_ray():
    """The `ray` module, or an IbsrError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise IbsrError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class ray_session:
    """Use the Ray instance this process already joined, else connect to `address` (or start
    a local one for LOCAL/None); shut it down afterwards only if this session started it."""

    def __init__(self, address: str | None = LOCAL):
        self.address = address or LOCAL
        self.started = False

    def __enter__(self):
        ray = import_ray()
        if ray.is_initialized():
            return ray
        options = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True)
        options["address"] = "local" if self.address == LOCAL else self.address
        try:
            with warnings.catch_warnings():  # Ray forks its services; LanceDB warns about forks
                warnings.filterwarnings("ignore", message=".*fork", category=RuntimeWarning)
                ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise IbsrError(f"cannot connect to Ray at {self.address!r} ({exc}); start it with "
                            "`ray start --head`, or pass --ray without an address to run Ray locally") from None
        self.started = True
        return ray

    def __exit__(self, *exc):
        if self.started:
            import ray
            ray.shutdown()


class ordered_pipeline:
    """Ray Data options for our pipelines while they run: rows in input order, no Ray
    progress bars (the caller shows its own); restored afterwards."""

    def __init__(self, ray):
        self.context = ray.data.DataContext.get_current()
        self.logger = logging.getLogger("ray.data")

    def __enter__(self):
        options = self.context.execution_options
        self.saved = (options.preserve_order, self.context.enable_progress_bars, self.logger.level)
        options.preserve_order = True
        self.context.enable_progress_bars = False
        self.logger.setLevel(logging.ERROR)  # no execution-plan chatter on the command line
        return self.context

    def __exit__(self, *exc):
        options = self.context.execution_options
        options.preserve_order, self.context.enable_progress_bars, level = self.saved
        self.logger.setLevel(level)


def encoder_pool(ray, device, encoders: int | None = None) -> dict:
    """map_batches arguments for an actor pool of encoders: one GPU per actor when the
    cluster has GPUs (unless `device` is an explicit CPU on a CUDA driver), else CPU actors."""
    import torch

    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    use_gpus = gpus > 0 and not (device.type == "cpu" and torch.cuda.is_available())
    if encoders is None:
        encoders = gpus if use_gpus else max(1, cpus // CPU_ENCODERS_PER_CPUS)
    return {"compute": ray.data.ActorPoolStrategy(size=encoders), "num_gpus": 1 if use_gpus else None,
            "num_cpus": 1, "device": "cuda" if use_gpus else "cpu"}


def model_payload(ray, model) -> dict:
    """Constructor arguments that rebuild `model` in an actor: its config and its weights, put
    in the object store once. Actors thus run the driver's model whatever the nodes hold."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return {"config": model.config.to_dict(), "state": ray.put(state)}


def load_model(config: dict, state, device: str):
    """The model of `model_payload`, in eval mode on `device` (inside an actor)."""
    import ray
    import torch

    from ibsr.model import ModelConfig, init_model

    if isinstance(state, ray.ObjectRef):
        state = ray.get(state)
    model = init_model(ModelConfig.from_dict(config))
    model.load_state_dict(state)
    return model.to(torch.device(device)).eval()


def cluster_cpus(ray) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def from_items(ray, items: list, blocks: int):
    """ray.data.from_items with `blocks` blocks (the keyword changed name in Ray 2.10)."""
    keyword = "override_num_blocks" if "override_num_blocks" in inspect.signature(ray.data.from_items).parameters \
        else "parallelism"
    return ray.data.from_items(items, **{keyword: blocks})
