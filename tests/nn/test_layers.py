"""Conv building blocks: lengths, streaming equivalence, TorchScript."""
import pytest
import torch
from torch import nn

from rave_ddsp.nn import layers


def stack(streaming: bool, causal: bool) -> nn.Module:
    """A small encoder/decoder-like stack using every block, with its cumulative delay."""
    torch.manual_seed(0)
    kw = dict(causal=causal, streaming=streaming)
    first = layers.conv1d(4, 8, 7, **kw)
    res = layers.ResidualStack(8, 3, [1, 3, 9], activation_name="snake", cumulative_delay=first.cumulative_delay, **kw)
    down = layers.conv1d(8, 8, 8, stride=4, cumulative_delay=res.cumulative_delay, **kw)
    res2 = layers.ResidualStack(8, 3, [1, 3], cumulative_delay=down.cumulative_delay, **kw)
    up = layers.Upsample(8, 4, 4, cumulative_delay=res2.cumulative_delay, **kw)
    model = nn.Sequential(first, res, down, res2, up)
    model.cumulative_delay = up.cumulative_delay
    return model.eval()


@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (3, 1, 9), (8, 4, 1), (9, 4, 1), (1, 1, 1)])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
def test_conv_output_length(kernel, stride, dilation, causal):
    conv = layers.conv1d(2, 3, kernel, stride=stride, dilation=dilation, causal=causal)
    assert conv(torch.randn(1, 2, 64)).shape == (1, 3, 64 // stride)


def test_causal_conv_does_not_look_ahead():
    conv = layers.conv1d(1, 1, 5, dilation=2, causal=True)
    x = torch.randn(1, 1, 50)
    y = conv(x)
    x2 = x.clone()
    x2[..., 30:] += 1.0
    torch.testing.assert_close(conv(x2)[..., :30], y[..., :30])


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
def test_streaming_equals_offline_after_the_reported_delay(causal):
    offline, streaming = stack(False, causal), stack(True, causal)
    streaming.load_state_dict(offline.state_dict())
    assert streaming.cumulative_delay == offline.cumulative_delay
    assert (streaming.cumulative_delay == 0) == causal
    x = torch.randn(2, 4, 2048)
    with torch.no_grad():
        y = offline(x)
        chunks = torch.cat([streaming(c) for c in x.split(128, -1)], -1)
    delay, settle = streaming.cumulative_delay, 256  # settle: start-up transient of the caches
    torch.testing.assert_close(chunks[..., delay + settle:], y[..., settle:y.shape[-1] - delay])


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 1, 81), (8, 4, 1), (3, 2, 1), (1, 1, 1), (1, 2, 1)])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
def test_cached_conv_in_uneven_chunks_equals_conv1d(kernel, stride, dilation, causal):
    torch.manual_seed(0)
    offline = layers.conv1d(3, 5, kernel, stride=stride, dilation=dilation, causal=causal, cumulative_delay=3)
    streaming = layers.conv1d(3, 5, kernel, stride=stride, dilation=dilation, causal=causal, streaming=True,
                              cumulative_delay=3)
    streaming.load_state_dict(offline.state_dict())
    x = torch.randn(2, 3, 96 * stride)
    late = nn.functional.pad(x, (3, 0))[..., :x.shape[-1]]  # what earlier streaming layers delayed by 3
    sizes = [stride * n for n in (1, 7, 2, 30, 5, 51)]  # a chunk of one output frame, and longer ones
    with torch.no_grad():
        streaming(torch.zeros(4, 3, stride))  # allocates the cache with more rows than the batch used
        layers.remove_weight_norm(streaming).cache.zero_()
        y = offline(x)
        chunks = torch.cat([streaming(c) for c in late.split(sizes, -1)], -1)
    delay = streaming.cumulative_delay  # the input's 3 plus this layer's look-ahead, rounded up to frames
    assert delay == offline.cumulative_delay
    settle = -(-(kernel - 1) * dilation // stride)  # frames that still see the zero start in one call only
    torch.testing.assert_close(chunks[..., delay + settle:], y[..., settle:y.shape[-1] - delay])


def test_wrong_delay_would_be_caught():
    offline, streaming = stack(False, False), stack(True, False)
    streaming.load_state_dict(offline.state_dict())
    x = torch.randn(1, 4, 2048)
    with torch.no_grad():
        y = offline(x)
        chunks = torch.cat([streaming(c) for c in x.split(128, -1)], -1)
    delay = streaming.cumulative_delay + 1
    assert not torch.allclose(chunks[..., delay + 256:], y[..., 256:y.shape[-1] - delay])


def test_scripted_streaming_stack_matches_eager():
    offline, streaming = stack(False, False), stack(True, False)
    streaming.load_state_dict(offline.state_dict())
    x = torch.randn(2, 4, 512)
    reference = stack(True, False)
    reference.load_state_dict(offline.state_dict())
    with torch.no_grad():
        for model in (streaming, reference):
            model(torch.zeros(2, 4, 128))  # cached_conv allocates its caches on the first call
        scripted = torch.jit.script(layers.remove_weight_norm(streaming))
        torch.testing.assert_close(scripted(x), reference(x))


def test_remove_weight_norm_keeps_the_function():
    model = stack(False, True)
    x = torch.randn(1, 4, 256)
    with torch.no_grad():
        before = model(x)
        layers.remove_weight_norm(model)
        after = model(x)
    assert not any("parametrizations" in name for name, _ in model.named_parameters())
    torch.testing.assert_close(after, before)


def test_upsample_interleaves_phases_in_time():
    up = layers.remove_weight_norm(layers.Upsample(1, 1, 3, kernel_size=1))
    with torch.no_grad():
        up.conv.weight.copy_(torch.tensor([1.0, 10.0, 100.0]).reshape(3, 1, 1))
        up.conv.bias.zero_()
    y = up(torch.tensor([[[1.0, 2.0]]]))
    torch.testing.assert_close(y, torch.tensor([[[1.0, 10.0, 100.0, 2.0, 20.0, 200.0]]]))


def test_snake_matches_formula_and_unknown_activation_is_refused():
    snake = layers.Snake(2)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([0.5, 2.0]).reshape(1, 2, 1))
    x = torch.randn(1, 2, 10)
    alpha = torch.tensor([0.5, 2.0]).reshape(1, 2, 1)
    expected = x + torch.sin(alpha * x) ** 2 / alpha
    torch.testing.assert_close(snake(x), expected)  # with a graph (alpha is learned)
    with torch.no_grad():  # without one: computed in place, the input left as it was
        kept = x.clone()
        torch.testing.assert_close(snake(x), expected)
        torch.testing.assert_close(x, kept)
    scripted = torch.jit.script(snake)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected)
    y = x.clone().requires_grad_()
    snake(y).sum().backward()
    torch.testing.assert_close(y.grad, 1 + torch.sin(2 * alpha * x))  # d/dx sin^2(ax)/a = sin(2ax)
    # training's closed-form derivatives (x and alpha) against autograd's own of the formula,
    # and against finite differences, alpha tiny included
    weights = torch.randn(1, 2, 10)
    for module in (snake, scripted):
        y = x.clone().requires_grad_()
        module.alpha.grad = None
        (weights * module(y)).sum().backward()
        y_ref, alpha_ref = x.clone().requires_grad_(), alpha.clone().requires_grad_()
        (weights * (y_ref + torch.sin(alpha_ref * y_ref) ** 2 / (alpha_ref + 1e-9))).sum().backward()
        torch.testing.assert_close(y.grad, y_ref.grad)
        torch.testing.assert_close(module.alpha.grad, alpha_ref.grad)
    epsilon = torch.tensor(1e-9, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x, a: layers._SnakeFunction.apply(x, a, epsilon),
                                    (torch.randn(2, 3, 20, dtype=torch.float64, requires_grad=True),
                                     torch.tensor([0.5, 2.0, 1e-3], dtype=torch.float64).reshape(1, 3, 1)
                                     .requires_grad_()))
    with pytest.raises(ValueError, match="unknown activation"):
        layers.activation("relu6", 2)


@pytest.mark.parametrize("batch,stride,dilation,length", [(1, 1, 9, 40), (1, 1, 3, 40), (1, 2, 3, 40), (2, 1, 9, 40),
                                                          (1, 1, 1, 40), (1, 4, 1, 40), (1, 1, 9, 4000)])
def test_convolve_equals_conv1d(batch, stride, dilation, length):
    x, weight, bias = torch.randn(batch, 6, length), torch.randn(5, 6, 3), torch.randn(5)
    expected = torch.nn.functional.conv1d(x, weight, bias, stride, 0, dilation)
    torch.testing.assert_close(layers.convolve(x, weight, bias, stride, dilation), expected)
    padded = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (dilation, dilation)), weight, bias, stride, 0,
                                        dilation)  # both paths (short and long inputs) pad alike
    torch.testing.assert_close(layers.convolve(x, weight, bias, stride, dilation, padding=dilation), padded)
