"""The torch worker pool (ibsr.cpus.parallel_map): single-threaded workers, results in order,
and the CPU rerank / encoders give the same bits for any number of workers (issue 12)."""

from __future__ import annotations

import threading

import pytest
import torch

from ibsr import cpus, kernels
from ibsr.errors import IbsrError
from ibsr.kernels import torch_path
from ibsr.model import inference, init_model
from ibsr.model.config import SMALL

from test_kernels import make_inputs


@pytest.fixture
def workers():
    """set_torch_workers(n) for the test; the default pool afterwards."""
    yield cpus.set_torch_workers
    cpus.set_torch_workers(None)


def test_workers_are_single_threaded_and_results_keep_item_order(workers):
    workers(3)
    seen = list(cpus.parallel_map(lambda i: (i, torch.get_num_threads(), threading.current_thread().name), range(50)))
    assert [i for i, _, _ in seen] == list(range(50))
    assert {n for _, n, _ in seen} == {1}
    assert all(name.startswith("ibsr-torch") for _, _, name in seen)
    assert cpus.pool_size() == 3


def test_nested_calls_run_inline_in_the_worker(workers):
    workers(2)
    def inner(_):
        return [threading.current_thread().name for _ in cpus.parallel_map(str, range(3))]

    outer = list(cpus.parallel_map(inner, range(4)))
    assert all(len(set(names)) == 1 for names in outer)  # no deadlock, the worker did its own items


def test_a_single_item_runs_in_the_calling_thread_while_a_slot_is_free(workers):
    workers(1)

    def item(_):
        nested = [threading.current_thread().name for _ in cpus.parallel_map(str, range(3))]
        return threading.current_thread().name, torch.get_num_threads(), nested

    name, threads, nested = next(iter(cpus.parallel_map(item, [0])))
    me = threading.current_thread().name
    assert (name, threads, nested) == (me, 1, [me] * 3)  # its nested call ran here: no wait for the one slot
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the workers never run under the caller's autocast
        name, autocast = next(iter(cpus.parallel_map(
            lambda _: (threading.current_thread().name, torch.is_autocast_enabled("cpu")), [0])))
    assert name.startswith("ibsr-torch") and not autocast


def test_a_single_item_waits_for_a_worker_when_every_slot_is_taken(workers):
    workers(1)
    started, release = threading.Event(), threading.Event()

    def hold(_):
        started.set()
        release.wait(60)
        return threading.current_thread().name

    holder = threading.Thread(target=lambda: list(cpus.parallel_map(hold, [0])))
    holder.start()
    assert started.wait(60)  # the holder thread runs its item itself and holds the only slot
    pending = cpus.parallel_map(lambda _: threading.current_thread().name, [0])
    release.set()
    assert next(iter(pending)).startswith("ibsr-torch")  # handed to the worker, which waited for the slot
    holder.join(60)


def test_never_more_items_at_once_than_workers(workers):
    workers(2)
    lock, running, most = threading.Lock(), [0], [0]

    def item(_):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        sum(range(20_000))  # some work, so that items overlap when they can
        with lock:
            running[0] -= 1

    def caller():
        for _ in range(30):
            list(cpus.parallel_map(item, [0]))  # single items: inline while a slot is free
            list(cpus.parallel_map(item, range(3)))  # several: the workers

    callers = [threading.Thread(target=caller) for _ in range(6)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(120)
    assert 1 <= most[0] <= 2


def test_torch_workers_env(monkeypatch):
    monkeypatch.setenv(cpus.TORCH_WORKERS_ENV, "3")
    assert cpus.torch_workers() == 3
    monkeypatch.setenv(cpus.TORCH_WORKERS_ENV, "two")
    with pytest.raises(IbsrError, match="IBSR_THREADS"):
        cpus.torch_workers()
    monkeypatch.delenv(cpus.TORCH_WORKERS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray gives a 1-CPU actor
    assert cpus.torch_workers() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpus.torch_workers() == cpus.usable_cpus()


def serial_reference(fn):
    """fn() computed the old way: the chunk loop inline in this thread, one torch thread."""
    saved, threads = torch_path.parallel_map, torch.get_num_threads()
    torch_path.parallel_map = lambda f, items: map(f, items)
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch_path.parallel_map = saved
        torch.set_num_threads(threads)


@pytest.mark.parametrize("B, N, k", [(1, 5000, 10), (7, 3001, 25), (64, 2000, 2000)])
def test_parallel_rerank_is_bit_identical_to_serial(workers, B, N, k):
    q, wq, views = make_inputs(B, N, 12, 32, torch.float16, seed=B)
    views[N // 3] = views[N // 2]  # exact ties across chunks
    chunk_bytes = 64 << 10  # many chunks at this size
    call = lambda: torch_path.rerank(q, wq, views, k, chunk_bytes=chunk_bytes)  # noqa: E731
    ref = serial_reference(call)
    for n in (1, 2, 5):
        workers(n)
        got = call()
        for a, b in zip(got, ref):
            assert torch.equal(a, b), n
    dense = serial_reference(lambda: torch_path.attention_scores(q, wq, views, chunk_bytes=chunk_bytes))
    assert torch.equal(torch_path.attention_scores(q, wq, views, chunk_bytes=chunk_bytes), dense)
    public = serial_reference(lambda: kernels.rerank(q, wq, views, k))
    assert torch.equal(kernels.rerank(q, wq, views, k).indices, public.indices)


def test_parallel_candidate_rerank_is_bit_identical_to_serial(workers):
    q, wq, views = make_inputs(5, 4000, 12, 32, torch.float16, seed=3)
    candidates = torch.randint(-1, 4000, (5, 900), generator=torch.Generator().manual_seed(0))
    call = lambda: kernels.rerank(q, wq, views, 40, candidates=candidates)  # noqa: E731
    ref = serial_reference(call)
    workers(3)
    for a, b in zip(call(), ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_encoders_do_not_depend_on_batching_or_workers(workers, monkeypatch, tmp_path, runtime):
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    monkeypatch.setenv("IBSR_PRECISION", "float32")
    monkeypatch.setenv("IBSR_RUNTIME", runtime)
    monkeypatch.setenv("IBSR_CACHE", str(tmp_path))
    model = init_model(SMALL)
    torch.manual_seed(0)
    photos = torch.rand(5, 4, SMALL.query_size, SMALL.query_size) * 2 - 1
    shapes = torch.rand(3, SMALL.views, 1, SMALL.render_size, SMALL.render_size) * 2 - 1
    workers(1)
    q1, v1 = inference.embed_queries(model, photos), inference.embed_views(model, shapes)
    workers(2)
    q2, v2 = inference.embed_queries(model, photos), inference.embed_views(model, shapes)
    assert torch.equal(q1, q2) and torch.equal(v1, v2)
    assert torch.equal(inference.embed_queries(model, photos[3:4]), q1[3:4])  # alone = within a batch
    assert torch.equal(inference.embed_views(model, shapes[1:2]), v1[1:2])
    with torch.no_grad():
        torch.testing.assert_close(q1, model.embed_queries(photos), atol=1e-5, rtol=0)  # the model's own numbers


def test_the_callers_grad_mode_applies_in_the_workers(workers):
    workers(2)
    q, wq, views = make_inputs(2, 3000, 12, 32, seed=1)
    wq.requires_grad_()  # e.g. W q straight from model.attend; kernels run under no_grad
    scores = kernels.attention_scores(q, wq, views)  # out= GEMMs would refuse a graph
    assert not scores.requires_grad
    assert kernels.rerank(q, wq, views, 5).scores.shape == (2, 5)
