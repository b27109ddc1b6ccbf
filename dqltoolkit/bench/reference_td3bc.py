"""A plain TD3+BC training step, structured the way Fujimoto & Gu's public ``TD3_BC.py`` is.

The yardstick for the td3bc recipe's row of ``dqltoolkit bench --rows recipes`` and for its equality
test: an ``Actor`` and a ``Critic`` module of separate ``nn.Linear`` layers (the critic's two Q-networks
side by side, ``Q1`` on its own for the actor), deep-copied target networks, the target policy's
smoothing noise, and Polyak loops over parameters every ``policy_freq`` steps.

Three deliberate differences from the original, so that it computes what the recipe does: the critic is
the toolkit's (Mish activations, as Diffusion-QL's critic, instead of ReLU); the delayed actor updates
fall on the 1st, 3rd, ... steps (the toolkit's) rather than the 2nd, 4th, ...; and random numbers come
from one ``torch.Generator`` in the toolkit's order (batch indices, then the smoothing noise), so that
a test can feed both implementations the same numbers.
"""

from __future__ import annotations

import copy
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .reference import copy_member_into_linears


class RefActor(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, max_action: float = 1.0, hidden: int = 256) -> None:
        super().__init__()
        self.l1 = nn.Linear(state_dim, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, action_dim)
        self.max_action = max_action

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.l1(state))
        a = F.relu(self.l2(a))
        return self.max_action * torch.tanh(self.l3(a))


class RefTwinCritic(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(state_dim + action_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)
        self.l4, self.l5, self.l6 = nn.Linear(state_dim + action_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)

    def forward(self, state: torch.Tensor, action: torch.Tensor):
        sa = torch.cat([state, action], 1)
        q1 = self.l3(F.mish(self.l2(F.mish(self.l1(sa)))))
        q2 = self.l6(F.mish(self.l5(F.mish(self.l4(sa)))))
        return q1, q2

    def Q1(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:  # noqa: N802 (the original's name)
        sa = torch.cat([state, action], 1)
        return self.l3(F.mish(self.l2(F.mish(self.l1(sa)))))


class ReferenceTD3BC:
    """The reference training step (``train_step``) on a dataset held as tensors."""

    def __init__(self, state_dim: int, action_dim: int, data: Dict[str, torch.Tensor], seed: int = 0, max_action: float = 1.0,
                 discount: float = 0.99, tau: float = 0.005, policy_noise: float = 0.2, noise_clip: float = 0.5, policy_freq: int = 2,
                 alpha: float = 2.5, lr: float = 3e-4, batch_size: int = 256, hidden: int = 256, device="cpu") -> None:
        torch.manual_seed(seed)
        self.actor = RefActor(state_dim, action_dim, max_action, hidden).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic = RefTwinCritic(state_dim, action_dim, hidden).to(device)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.data, self.max_action, self.discount, self.tau = data, max_action, discount, tau
        self.policy_noise, self.noise_clip, self.policy_freq, self.alpha = policy_noise, noise_clip, policy_freq, alpha
        self.batch_size = batch_size
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)
        self.total_it = 0

    def train_step(self) -> Dict[str, torch.Tensor]:
        self.total_it += 1
        n = self.data["obs"].shape[0]
        idx = torch.randint(n, (self.batch_size,), generator=self.gen, device=self.data["obs"].device)
        state, action = self.data["obs"][idx], self.data["actions"][idx]
        reward, next_state = self.data["rewards"][idx].unsqueeze(1), self.data["next_obs"][idx]
        not_done = 1.0 - self.data["terminals"][idx].unsqueeze(1)
        with torch.no_grad():
            noise = (torch.randn(action.shape, generator=self.gen, device=action.device) * self.policy_noise).clamp(-self.noise_clip,
                                                                                                                   self.noise_clip)
            next_action = (self.actor_target(next_state) + noise).clamp(-self.max_action, self.max_action)
            target_q1, target_q2 = self.critic_target(next_state, next_action)
            target_q = reward + not_done * self.discount * torch.min(target_q1, target_q2)
        current_q1, current_q2 = self.critic(state, action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        out = {"critic_loss": critic_loss.detach()}
        if self.total_it % self.policy_freq == 1 % self.policy_freq:  # the toolkit's actor steps: the 1st, 3rd, ...
            pi = self.actor(state)
            q = self.critic.Q1(state, pi)
            lmbda = self.alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, action)
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            for param, target in zip(self.critic.parameters(), self.critic_target.parameters()):
                target.data.copy_(self.tau * param.data + (1 - self.tau) * target.data)
            for param, target in zip(self.actor.parameters(), self.actor_target.parameters()):
                target.data.copy_(self.tau * param.data + (1 - self.tau) * target.data)
            out["actor_loss"] = actor_loss.detach()
        return out

    @torch.no_grad()
    def load_from_agent(self, agent, member: int = 0) -> "ReferenceTD3BC":
        """Copy a toolkit td3bc agent's weights (member ``member``) into these modules, for equality tests."""

        copy_layers = copy_member_into_linears
        for ref, head in ((self.actor, agent.head), (self.actor_target, agent.ema_head)):
            copy_layers([ref.l1, ref.l2, ref.l3], head.net, member)
        for ref, net in ((self.critic, agent.critic.q), (self.critic_target, agent.critic.target)):
            copy_layers([ref.l1, ref.l2, ref.l3], net, 2 * member)
            copy_layers([ref.l4, ref.l5, ref.l6], net, 2 * member + 1)
        self.gen.set_state(agent.train_generators[member].get_state())
        return self
