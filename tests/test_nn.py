import torch
import torch.nn.functional as F

from dqltoolkit.nn import EnsembleLinear, EnsembleMLP, clip_grad_norm_members, member_generators


def test_ensemble_linear_equals_separate_linears():
    layer = EnsembleLinear(3, 5, 4)
    x = torch.randn(3, 7, 5)
    y = layer(x)
    for m in range(3):
        torch.testing.assert_close(y[m], x[m] @ layer.weight[m] + layer.bias[m, 0])


def test_member_init_is_reproducible_per_seed():
    a = EnsembleMLP(2, 4, 1, [8])
    a.reset_parameters(member_generators([3, 7]))
    b = EnsembleMLP(1, 4, 1, [8])
    b.reset_parameters(member_generators([7]))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa[1:2], pb)
    bound = 1 / 4**0.5
    assert a.layers[0].weight.abs().max() <= bound


def test_clip_grad_norm_is_per_member():
    p = torch.nn.Parameter(torch.zeros(2, 3))
    p.grad = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]])
    norms = clip_grad_norm_members([p], 1.0, 2)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(p.grad, torch.tensor([[0.6, 0.8, 0.0], [0.3, 0.4, 0.0]]), atol=1e-5, rtol=1e-5)


def test_mlp_forward_equals_layer_by_layer():
    net = EnsembleMLP(2, 5, 3, [16, 16])
    x = torch.randn(2, 7, 5)
    h = x
    for i, layer in enumerate(net.layers):
        h = layer(h)
        if i < len(net.layers) - 1:
            h = F.mish(h)
    torch.testing.assert_close(net(x), h, atol=1e-5, rtol=1e-5)
