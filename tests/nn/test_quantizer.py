"""The residual vector quantizer: it really quantizes, learns, restarts dead codes and drops codebooks."""
import math

import pytest
import torch

from rave_ddsp.nn.quantizer import ResidualVectorQuantizer, usage_statistics


def quantizer(**overrides) -> ResidualVectorQuantizer:
    torch.manual_seed(0)
    defaults = dict(latent_size=6, n_codebooks=2, codebook_size=4, codebook_dim=3)
    return ResidualVectorQuantizer(**{**defaults, **overrides})


def test_the_latent_takes_at_most_size_to_the_codebooks_values_and_decodes_from_the_codes():
    rvq = quantizer().eval()
    z = torch.randn(3, 6, 400)
    quantized, codes, _, _ = rvq(z)
    frames = quantized.transpose(1, 2).reshape(-1, 6)
    assert len(torch.unique(frames, dim=0)) <= 4 ** 2
    # the continuous input has 1200 distinct frames; the quantizer keeps a handful
    assert len(torch.unique(z.transpose(1, 2).reshape(-1, 6), dim=0)) == 1200
    assert codes.shape == (3, 2, 400) and codes.dtype == torch.int64 and 0 <= codes.min() and codes.max() < 4
    assert torch.equal(rvq.decode(codes), quantized)  # bit for bit
    # the first codebook alone: as quantizing with one
    assert torch.equal(rvq.decode(codes[:, :1]), rvq(z, 1)[0])


def test_each_stage_picks_the_nearest_entry_by_cosine_and_quantizes_the_residual():
    rvq = quantizer().eval()
    z = torch.randn(1, 6, 50)
    _, codes, _, _ = rvq(z)
    residual = z
    for i, book in enumerate(rvq.books):
        e = book.project_in(residual)  # [1, d, L]
        cosine = torch.nn.functional.cosine_similarity(e[:, :, None], book.entries.T[None, :, :, None],
                                                       dim=1)  # [1, K, L]
        assert torch.equal(codes[:, i], cosine.argmax(1))
        residual = residual - book.project_out(book.entries[codes[:, i]].transpose(1, 2))


def test_more_codebooks_quantize_closer():
    rvq = quantizer(n_codebooks=4, codebook_size=16, codebook_dim=6).eval()
    with torch.no_grad():  # a lossless lookup space: projections in and out invert each other
        for book in rvq.books:
            book.project_in.weight.copy_(torch.eye(6)[:, :, None])
            book.project_in.bias.zero_()
            book.project_out.weight.copy_(torch.eye(6)[:, :, None])
            book.project_out.bias.zero_()
            book.entries.mul_(0.0).add_(torch.randn(16, 6))
    z = torch.randn(2, 6, 300)
    errors = [float((rvq(z, n)[0] - z).pow(2).mean()) for n in range(1, 5)]
    # each stage picks a direction only (cosine), so closer is not guaranteed per frame; on average it is
    assert errors[-1] < errors[0]


def test_training_passes_gradient_straight_through_and_scores_commitment_and_codebook():
    rvq = quantizer(dropout=0.0).train()
    z = torch.randn(2, 6, 30, requires_grad=True)
    quantized, _, commitment, codebook = rvq(z)
    assert commitment > 0 and codebook > 0
    quantized.pow(2).sum().backward(retain_graph=True)
    assert z.grad is not None and z.grad.abs().sum() > 0  # the encoder learns through the lookup
    entries = rvq.books[0].entries
    entries.grad = None
    codebook.backward()
    assert entries.grad is not None and entries.grad.abs().sum() > 0  # the codebook term moves the entries
    assert float(commitment) == pytest.approx(float(codebook))  # the same distance, gradients to either side


def test_quantizer_dropout_trains_with_fewer_codebooks_for_some_examples():
    rvq = quantizer(n_codebooks=4, codebook_size=8, dropout=1.0, dead_code_steps=0).train()
    z = torch.randn(64, 6, 10)
    quantized, codes, _, _ = rvq(z)
    rvq.eval()
    counts = set()
    for b in range(64):
        matches = [n for n in range(1, 5) if torch.allclose(quantized[b:b + 1], rvq.decode(codes[b:b + 1, :n]),
                                                            atol=1e-5)]
        assert matches, f"example {b} is no prefix of its codes"
        counts.add(matches[0])
    assert len(counts) >= 3
    rvq.train()
    rvq.dropout = 0.0
    quantized, codes, _, _ = rvq(z)
    assert torch.allclose(quantized, rvq.eval().decode(codes), atol=1e-5)  # without dropout: all of them


def test_entries_unused_for_dead_code_steps_restart_at_inputs_of_the_batch():
    rvq = quantizer(n_codebooks=1, codebook_size=8, dropout=0.0, dead_code_steps=3).train()
    z = torch.randn(1, 6, 1).expand(2, 6, 20).contiguous()  # one input frame: one entry used, 7 idle
    before = rvq.books[0].entries.detach().clone()
    for _ in range(2):
        _, codes, _, _ = rvq(z)
    assert torch.equal(rvq.books[0].entries, before)  # idle for 2 steps: not yet
    used = int(codes[0, 0, 0])
    rvq(z)
    after = rvq.books[0].entries.detach()
    restarted = [k for k in range(8) if not torch.equal(after[k], before[k])]
    assert restarted == [k for k in range(8) if k != used]
    e = rvq.books[0].project_in(z)[0, :, 0].detach()
    for k in restarted:
        assert torch.allclose(after[k], e)
    assert int(rvq.idle_steps.max()) == 0


def test_usage_statistics():
    counts = torch.tensor([[5.0, 5.0, 5.0, 5.0], [20.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    perplexity, used = usage_statistics(counts)
    assert perplexity[0] == pytest.approx(4.0) and perplexity[1] == pytest.approx(1.0)
    assert used.tolist() == [1.0, 0.25, 0.0]


def test_bits_and_bad_arguments():
    assert quantizer(n_codebooks=9, codebook_size=1024).bits_per_frame == 90
    assert quantizer(codebook_size=1000).bits_per_frame == pytest.approx(2 * math.log2(1000))
    for bad in (dict(n_codebooks=0), dict(codebook_size=1), dict(codebook_dim=0), dict(dropout=1.5)):
        with pytest.raises(ValueError):
            quantizer(**bad)


def test_scripts_in_torchscript():
    rvq = quantizer().eval()
    scripted = torch.jit.script(rvq)
    z = torch.randn(2, 6, 20)
    assert torch.equal(scripted(z)[1], rvq(z)[1])
    assert torch.equal(scripted.decode(rvq(z)[1]), rvq(z)[0])


def restart_in_process(rank: int, world: int, port: int, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        rvq = quantizer(n_codebooks=1, codebook_size=8, dropout=0.0, dead_code_steps=2).train()  # same seed: same init
        torch.manual_seed(100 + rank)  # each process its own data and its own random choices
        z = torch.randn(1, 6, 1).expand(2, 6, 10).contiguous()  # one frame each: most entries go idle
        for _ in range(3):
            rvq(z)
        results[rank] = (rvq.books[0].entries.detach().clone(), rvq.idle_steps.clone())
    finally:
        torch.distributed.destroy_process_group()


def test_data_parallel_replicas_restart_the_same_entries_with_the_same_values():
    import socket
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(restart_in_process, args=(2, port, results), nprocs=2, join=True)
    (entries_0, idle_0), (entries_1, idle_1) = results[0], results[1]
    assert torch.equal(idle_0, idle_1)
    assert torch.equal(entries_0, entries_1)
    assert not torch.equal(entries_0, quantizer(n_codebooks=1, codebook_size=8).books[0].entries.detach())  # restarted
