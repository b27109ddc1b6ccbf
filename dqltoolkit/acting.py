"""The acting policy: candidates from the head, chosen by the critic, in the env's units.

With a critic, each state gets ``n_candidates`` sampled actions, and one is drawn with probability softmax(Q)
(Diffusion-QL's rule; objectives with ``greedy_acting``, BCQ and BEAR, take the best). Without a critic, one sample.

``deterministic=True`` means the same observation always gets the same action: candidates from fixed noise, and
the softmax(Q)-weighted medoid taken, an actual sample inside the dominant mode. Why not argmax Q: on the bandit it
sits where the critic extrapolates past a mode's edge (4.36 against 5.0); nor one fixed softmax draw: its quality
varies with the seed (one seed in ten picked a reward-0 candidate for every episode).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .learner import Learner
from .nn import member_generators, member_rand
from .objectives.base import sampler_option

#: candidate rows evaluated at once; ``predict`` on a large batch works through it in chunks of this many
CANDIDATE_ROWS_PER_CHUNK = 16384
#: the seed of the fixed noise behind deterministic acting (offset by the member's seed)
DETERMINISTIC_SEED = 2**31 - 1

#: where the uniform numbers of the softmax(Q) draw are clamped (log(-log u) stays finite)
UNIFORM_CLAMP = (1e-20, 1.0 - 1e-7)


def selection_scores(q: Tensor, cand: Tensor, rule: str, u: Optional[Tensor] = None) -> Tensor:
    """The score whose argmax over the candidates (``q`` ``[..., N]``, ``cand`` ``[..., N, A]``) is the action taken, for
    acting and the exported graph: ``greedy``: Q; ``draw``: Q plus Gumbel noise from uniforms ``u`` (a softmax(Q) draw);
    ``medoid`` (deterministic acting): minus each candidate's softmax(Q)-weighted distance to the others."""
    if rule == "greedy":
        return q
    if rule == "medoid":
        dist = (cand.unsqueeze(-2) - cand.unsqueeze(-3)).pow(2).sum(-1).sqrt()
        return -(dist * torch.softmax(q, -1).unsqueeze(-2)).sum(-1)
    if rule != "draw" or u is None:
        raise ValueError(f"selection rule {rule!r}: expected greedy, medoid, or draw with uniform numbers")
    return q - torch.log(-torch.log(u.clamp(*UNIFORM_CLAMP)))


def selection_rule(greedy: bool, deterministic: bool) -> str:
    """The rule of :func:`selection_scores` an acting policy uses: greedy objectives take the best Q, deterministic
    acting the medoid, stochastic acting a softmax(Q) draw (the paper's)."""
    return "greedy" if greedy else "medoid" if deterministic else "draw"


def take_best(cand: Tensor, score: Tensor) -> Tensor:
    """The candidate (``cand`` ``[..., N, A]``) with the highest score (``score`` ``[..., N]``) -> ``[..., A]``."""
    k = score.argmax(dim=-1)
    return torch.gather(cand, -2, k[..., None, None].expand(*([-1] * k.dim()), 1, cand.shape[-1])).squeeze(-2)


class ActingPolicy:
    """Acting with a learner's networks (the online head, or another one such as the EMA head)."""

    def __init__(self, learner: Learner) -> None:
        self.learner = learner
        self._cache: dict = {}

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False, head: Any = None) -> Tensor:
        """Actions for raw observations ``[M, B, obs_dim]`` -> ``[M, B, action_dim]`` in Box units, in chunks
        of at most :data:`CANDIDATE_ROWS_PER_CHUNK` candidate rows (bounded memory for any batch)."""
        L = self.learner
        n = max(L.config.n_candidates if L.critic is not None else 1, 1)
        rows = max(CANDIDATE_ROWS_PER_CHUNK // n, 1)
        with L.precision_scope:
            if obs.shape[1] <= rows:
                return self._act_once(obs, deterministic, head)
            return torch.cat([self._act_once(chunk, deterministic, head) for chunk in obs.split(rows, dim=1)], dim=1)

    def _act_once(self, obs: Tensor, deterministic: bool, head: Any) -> Tensor:
        L = self.learner
        if head is None:  # the policy's own acting: a backend may replay it (CUDA graphs per batch shape)
            return L.backend.act((tuple(obs.shape), bool(deterministic)), obs, lambda x: self._act(x, deterministic, L.head))
        return self._act(obs, deterministic, head)

    def _act(self, obs: Tensor, deterministic: bool, head: Any) -> Tensor:
        L = self.learner
        obs = (obs - L.obs_mean) / L.obs_std
        M, B, _ = obs.shape
        N = L.config.n_candidates if L.critic is not None else 1
        steps = L.config.sample_steps or None
        aux = L.aux if head is L.head else L.ema_aux
        gens, noise = L.act_generators, None
        if deterministic:
            gens, base = self.fixed_draws(head, N, steps)
            noise = None if base is None else base.repeat(*[B if i == head.noise_row_dim + 1 else 1 for i in range(base.dim())])
        kw = sampler_option(L.config.sampler)  # (only when set: heads and objectives that predate samplers work)
        if N <= 1:
            a = L.objective.policy_sample(head, aux, obs, gens, noise=noise, steps=steps, **kw)
        else:
            rep = obs.repeat_interleave(N, dim=1)
            cand = L.objective.policy_sample(head, aux, rep, gens, noise=noise, steps=steps, **kw)
            q = L.critic.action_values(rep, cand).view(M, B, N)
            cand = cand.view(M, B, N, -1)
            rule = selection_rule(L.objective.greedy_acting, deterministic)
            u = member_rand(gens, (B, N), obs.device) if rule == "draw" else None
            a = take_best(cand, selection_scores(q, cand, rule, u))
        return a * L.action_scale + L.action_center

    def fixed_draws(self, head: Any, n: int, steps: Optional[int]):
        """Deterministic acting's draws, made once per (head, candidates, steps) and kept (so a backend can replay them):
        seeded generators and the head's noise for ``n`` candidates (None without ``noise_row_dim``: restarted generators)."""
        L = self.learner
        key = (id(head), n, steps)
        hit = self._cache.get(key)
        if hit is None:
            gens = member_generators([DETERMINISTIC_SEED - s for s in L.seeds], L.device)
            base = head.draw_noise(n, gens, L.device, steps) if head.noise_row_dim is not None else None
            hit = self._cache[key] = (gens, base)
        gens, base = hit
        if base is None:  # a head without fixed noise: restart its generators, so each call draws the same
            for g, s in zip(gens, L.seeds):
                g.manual_seed(DETERMINISTIC_SEED - s)
        return gens, base

    # --- SB3's predict -------------------------------------------------------------------------------
    def predict(self, observation: Any, observation_space: Any, action_space: Any,
                deterministic: bool) -> Tuple[np.ndarray, bool]:
        """SB3's predict for member 0: one observation -> one action, a batch -> a batch; ``(actions, single)``."""
        L = self.learner
        if isinstance(observation, dict):
            raise ValueError("predict: dict observations are not supported; dqltoolkit agents take a Box observation")
        obs = np.asarray(observation, dtype=np.float32)
        shape = tuple(observation_space.shape)
        single = obs.shape == shape
        if not single and not (obs.ndim == len(shape) + 1 and tuple(obs.shape[1:]) == shape):
            raise ValueError(f"predict: observation has shape {obs.shape}; expected {shape} for one observation "
                             f"or (n_envs, {', '.join(map(str, shape))}) for a batch")
        flat = obs.reshape(-1, L.obs_dim)
        if flat.shape[0] == 0:
            return np.zeros((0, *action_space.shape), dtype=action_space.dtype), single
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
        if len(bad):
            where = "the observation" if single else f"observation rows {bad[:5].tolist()}{' ...' if len(bad) > 5 else ''}"
            raise ValueError(f"predict: {where} contain NaN or Inf; no action is defined for them")
        x = torch.as_tensor(flat, device=L.device)
        a = self.act(x.unsqueeze(0).expand(L.members, -1, -1), deterministic)[0].cpu().numpy()
        a = np.clip(a, action_space.low, action_space.high).astype(action_space.dtype)
        return (a[0] if single else a), single
