"""Stochastic diagonal Levenberg-Marquardt (1998 paper, Appendix C), the optimizer both LeNets were trained with.

Each parameter w_k gets its own step size from an estimate h_kk of the loss's second derivative:

    w_k <- w_k - eps_k dE/dw_k,        eps_k = eta / (mu + h_kk)                  (Appendix C, eq. 21)

h_kk is the Gauss-Newton (always positive) approximation of d^2E/dw_k^2, averaged over a few hundred training
patterns and re-estimated before every pass (the paper: 500 patterns, mu = 0.02). The paper back-propagates
second derivatives with the off-diagonal terms dropped at every layer; we estimate the exact Gauss-Newton
diagonal instead, by one random projection per pattern:

    GN = J^T H J, where J = dz/dw for the network's output vector z and H = d^2E/dz^2 = c I.
    With v uniform in {-1, +1}^K:  E_v[(v^T J)_k^2] = sum_o J_ok^2,  so  h_kk ~ c * mean_patterns (d(v.z)/dw_k)^2.

For the RBF output, E's pull term y_D = |z - code_D|^2 has c = 2 with z = F6's state; for the 1989 net's
1/2 |out - d|^2, c = 1 with z = the outputs.
"""

import torch


class SDLM(torch.optim.Optimizer):
    """Per-parameter steps eta / (mu + h). Call `set_curvature` before using it (h = 0 would mean eta / mu)."""

    def __init__(self, params, lr: float, mu: float = 0.02):
        super().__init__(params, dict(lr=lr, mu=mu))

    def set_curvature(self, hs) -> None:
        params = [p for g in self.param_groups for p in g["params"]]
        for p, h in zip(params, hs):
            self.state[p]["h"] = h.detach().clone()

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                h = self.state[p].get("h")
                denom = group["mu"] + (h if h is not None else torch.zeros_like(p))
                p.addcdiv_(p.grad, denom, value=-group["lr"])  # eps_k = eta / (mu + h_kk)


def gauss_newton_diagonal(outputs, params, x: torch.Tensor, c: float) -> list[torch.Tensor]:
    """h_kk for each parameter, averaged over the patterns in x (one backward pass per pattern).
    outputs(x) -> (B, K) is the vector z whose squared error the loss takes; c = d^2E/dz^2."""
    hs = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        z = outputs(x[i:i + 1]).float()  # (1, K)
        v = torch.randint(0, 2, z.shape, device=z.device).float() * 2 - 1
        grads = torch.autograd.grad((z * v).sum(), params)
        for h, g in zip(hs, grads):
            h.add_(g.pow(2))
    return [h.mul_(c / len(x)) for h in hs]
