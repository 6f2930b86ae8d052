"""The FilteredNoise module: shapes, streaming, TorchScript."""
import pytest
import torch

from rave_ddsp.dsp import filtered_noise as dsp
from rave_ddsp.nn.layers import remove_weight_norm
from rave_ddsp.nn.noise import FilteredNoise


def pair(causal: bool, **kwargs):
    """A non-streaming FilteredNoise and its streaming twin with the same weights."""
    torch.manual_seed(0)
    offline = FilteredNoise(8, 4, causal=causal, **kwargs)
    streaming = FilteredNoise(8, 4, causal=causal, streaming=True, **kwargs)
    streaming.load_state_dict(offline.state_dict())
    return offline.eval(), streaming.eval()


def test_shapes_and_range():
    module = FilteredNoise(8, 16, n_frequencies=5, ratios=(2, 4))
    hidden = torch.randn(3, 8, 256)
    magnitudes = module.magnitudes(hidden)
    assert magnitudes.shape == (3, 16, 256 // 8, 5)
    assert float(magnitudes.min()) > 0 and float(magnitudes.max()) <= 2 + 1e-6
    noise = module(hidden)
    assert noise.shape == (3, 16, 256)
    assert torch.isfinite(noise).all()


def test_starts_nearly_silent():
    torch.manual_seed(0)
    module = FilteredNoise(8, 4)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(0.01)  # raw outputs near 0 -> magnitudes near exp_sigmoid(0) ~ 2e-5
        noise = module(torch.randn(1, 8, 1024))
    assert float(noise.pow(2).mean().sqrt()) < 1e-4


def test_gradient_reaches_the_network():
    module = FilteredNoise(8, 4, ratios=(2, 2))
    module(torch.randn(2, 8, 64)).pow(2).mean().backward()
    grads = [p.grad for p in module.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
def test_streaming_chunks_equal_one_call_for_the_same_noise(causal):
    offline, streaming = pair(causal, n_frequencies=33)  # IR of 64 samples spans the frames
    hidden = torch.randn(2, 8, 64 * 12)
    noise = torch.rand(2, 4, 64 * 12) * 2 - 1
    with torch.no_grad():
        magnitudes = offline.magnitudes(hidden)
        whole = offline.synthesize(magnitudes, noise)
        chunks = []
        for start, stop in [(0, 1), (1, 5), (5, 6), (6, 12)]:  # in frames of 64 samples
            chunks.append(streaming.synthesize(magnitudes[:, :, start:stop], noise[..., 64 * start:64 * stop]))
    torch.testing.assert_close(torch.cat(chunks, -1), whole)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
def test_streaming_magnitudes_are_the_offline_ones_delayed(causal):
    offline, streaming = pair(causal)
    hidden = torch.randn(2, 8, 64 * 16)
    with torch.no_grad():
        whole = offline.magnitudes(hidden)
        chunks = torch.cat([streaming.magnitudes(h) for h in hidden.split(128, -1)], 2)
    delay = streaming.cumulative_delay // streaming.frame_size  # in frames
    assert delay == offline.cumulative_delay // offline.frame_size
    assert (delay == 0) == causal
    settle = 4  # frames whose receptive field reaches before the signal start
    n = whole.shape[2]
    torch.testing.assert_close(chunks[:, :, delay + settle:], whole[:, :, settle:n - delay])


def test_scripted_streaming_module_matches_eager():
    offline, streaming = pair(True)
    hidden = torch.randn(2, 8, 128)
    with torch.no_grad():
        streaming(hidden)  # cached_conv allocates its caches on the first call
        scripted = torch.jit.script(remove_weight_norm(streaming))
        scripted_twin = torch.jit.script(remove_weight_norm(offline))
        magnitudes = offline.magnitudes(hidden)
        torch.testing.assert_close(scripted_twin.magnitudes(hidden), magnitudes)
        noise = torch.rand(2, 4, 128) * 2 - 1
        torch.testing.assert_close(scripted_twin.synthesize(magnitudes, noise),
                                   dsp.filtered_noise(magnitudes, 64, noise))
        out = scripted(hidden)
    assert out.shape == (2, 4, 128) and torch.isfinite(out).all()


def test_streaming_state_is_per_voice():
    _, streaming = pair(True, n_frequencies=33)
    hidden = torch.randn(3, 8, 64)
    noise = torch.rand(3, 4, 64) * 2 - 1
    with torch.no_grad():
        magnitudes = streaming.magnitudes(hidden)
        batch = streaming.synthesize(magnitudes, noise)
    _, single = pair(True, n_frequencies=33)
    with torch.no_grad():
        single.magnitudes(hidden[1:2])
        alone = single.synthesize(magnitudes[1:2], noise[1:2])
    torch.testing.assert_close(batch[1:2], alone)


def deterministic(module: FilteredNoise) -> FilteredNoise:
    module.deterministic = True
    return module


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
def test_deterministic_noise_streams_exactly_and_matches_the_offline_twin_after_its_delay(causal):
    offline, streaming = pair(causal, n_frequencies=33)
    _, one_call = pair(causal, n_frequencies=33)
    for module in (offline, streaming, one_call):
        deterministic(module)
    hidden = torch.randn(2, 8, 64 * 24)
    with torch.no_grad():
        chunks = torch.cat([streaming(h) for h in hidden.split(128, -1)], -1)
        whole_streaming = one_call(hidden)
        whole_offline = offline(hidden)
    torch.testing.assert_close(chunks, whole_streaming)  # buffer by buffer = one call
    delay, settle = streaming.cumulative_delay, 4 * 64
    assert (delay == 0) == causal
    n = whole_offline.shape[-1]
    torch.testing.assert_close(chunks[..., delay + settle:], whole_offline[..., settle:n - delay])


def test_table_noise_is_uniform_white_and_differs_between_bands():
    module = deterministic(FilteredNoise(8, 4))
    noise = module.table_noise(2, 20000)
    assert noise.shape == (2, 4, 20000)
    torch.testing.assert_close(noise[0], noise[1])  # every voice hears the same noise
    assert float(noise.abs().max()) <= 1.0 and float(noise.var()) == pytest.approx(1 / 3, rel=0.05)
    correlation = torch.corrcoef(noise[0])
    assert float((correlation - torch.eye(4)).abs().max()) < 0.05
