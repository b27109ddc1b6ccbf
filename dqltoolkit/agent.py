"""The agent: any head + critic + objective, trained offline, used like a Stable-Baselines3 model.

One class runs every composition a recipe names. Its public surface follows SB3 where that makes sense
(``learn``, ``predict``, ``save``, ``load``, ``get_env``, ``logger``, ``num_timesteps``) so that
``evaluate_policy``, ``EvalCallback`` and ``CheckpointCallback`` work on it unchanged.

All networks carry a member dimension: ``seeds=(0, 1, 2)`` trains three independent agents in one
process, each drawing its own initial weights, batches and noise from its own generator, so that each
member equals a separate single-seed run.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from . import critics as _critics  # noqa: F401  (registers built-ins)
from . import heads as _heads  # noqa: F401
from . import objectives as _objectives  # noqa: F401
from .config import AgentConfig
from .cuda_graphs import InputGraphs, StepGraphs
from .precision import check_precision, matmul_precision
from .data.buffer import TransitionBuffer
from .nn import clip_grad_norm_members, foreach_pieces, member_generators, member_rand, member_randn
from .registry import CRITICS, HEADS, OBJECTIVES, UnknownNameError


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def _make_adam(params: List[nn.Parameter], lr: float, capturable: bool = False, lr_as_tensor: bool = False) -> torch.optim.Adam:
    """Fused Adam: one kernel for all parameters (CPU and CUDA); foreach where a build lacks it.

    ``capturable``: step counts stay on the device so CUDA graphs can replay the step; ``lr_as_tensor``:
    the learning rate lives in a device tensor too, so a graphed step follows the lr schedule.
    """
    kw: Dict[str, Any] = {"capturable": True} if capturable else {}
    rate: Union[float, Tensor] = torch.tensor(float(lr), device=params[0].device) if lr_as_tensor else lr
    try:
        opt = torch.optim.Adam(params, lr=rate, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(params, lr=rate, foreach=True, **kw)
    if capturable:
        # the warm-up steps before capture run eagerly by design: silence torch's one-off warning about that
        opt._warned_capturable_if_run_uncaptured = True
    return opt


class _CriticAfter:
    """The critic as the actor's loss sees it while the critic's own update may still be running on
    another CUDA stream: the first use makes the actor's stream wait for that update, so the actor reads
    the updated critic as in the reference order (critic step, then actor step)."""

    def __init__(self, critic: nn.Module, stream: "torch.cuda.Stream") -> None:
        self._critic, self._stream = critic, stream

    def _ready(self) -> nn.Module:
        torch.cuda.current_stream(self._stream.device).wait_stream(self._stream)
        return self._critic

    def policy_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        from .objectives.base import q_of

        return q_of(self._ready(), obs, actions)

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        return self._ready()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ready(), name)


class Agent:
    """Offline RL agent. Build from a config and spaces, give it data with :meth:`set_dataset`, then
    :meth:`learn`; or :meth:`load` a checkpoint."""

    def __init__(
        self,
        config: AgentConfig,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        seeds: Sequence[int] = (0,),
        device: Union[str, torch.device] = "auto",
        env: Optional[gym.Env] = None,
        task: Optional[str] = None,
    ) -> None:
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"dqltoolkit agents need a 1-D Box action space, got {action_space}")
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"dqltoolkit agents need a 1-D Box observation space, got {observation_space}")
        if not np.all(np.isfinite(action_space.low)) or not np.all(np.isfinite(action_space.high)):
            raise ValueError("dqltoolkit agents need finite action bounds")
        self.config = config
        self.observation_space, self.action_space = observation_space, action_space
        self.seeds = [int(s) for s in seeds]
        self.members = len(self.seeds)
        self.device = resolve_device(device)
        self.task = task
        self.obs_dim = int(observation_space.shape[0])
        self.action_dim = int(action_space.shape[0])
        self.num_timesteps = 0
        self._env = None
        self._logger = None
        self.buffer: Optional[TransitionBuffer] = None
        self._build()
        if env is not None:
            self.set_env(env)

    # --- construction -----------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, M, dev = self.config, self.members, self.device
        check_precision(cfg.matmul_precision)
        if cfg.backup_order not in ("max-first", "reduce-first"):
            raise ValueError(f"backup_order must be 'max-first' or 'reduce-first', got {cfg.backup_order!r}")
        what = f"head {cfg.head!r} with objective {cfg.objective!r}"
        try:
            head_cls = HEADS.get(cfg.head)
            obj_cls = OBJECTIVES.get(cfg.objective)
        except UnknownNameError as exc:
            raise UnknownNameError(f"cannot build {what}: {exc}") from None
        self.objective = obj_cls(**cfg.to_dict(), config=cfg)
        if self.objective.needs_differentiable_samples and not getattr(head_cls, "differentiable_samples", False):
            raise ValueError(
                f"cannot build {what}: objective {cfg.objective!r} needs differentiable samples, but head {cfg.head!r} cannot give them"
            )
        self.head = head_cls(self.obs_dim, self.action_dim, members=M, **self._head_kwargs(head_cls)).to(dev)
        self.uses_critic = bool(self.objective.uses_critic)
        if self.uses_critic:
            critic_cls = CRITICS.get(cfg.critic)
            self.critic = critic_cls(self.obs_dim, self.action_dim, members=M, hidden=cfg.critic_hidden, n_layers=cfg.critic_layers,
                                     **self._critic_kwargs(critic_cls, what)).to(dev)
        else:
            self.critic = None
        self.train_generators = member_generators(self.seeds, dev)
        # parameters of member m come from generator m, so a member equals a single run with its seed
        self.head.reset_parameters(self.train_generators)
        if self.critic is not None:
            self.critic.reset_parameters(self.train_generators)
        # networks the objective owns (BCQ's perturbation model, BEAR's behaviour CVAE): trained with the actor
        self.aux = nn.ModuleDict(self.objective.build(self.obs_dim, self.action_dim, M, cfg)).to(dev)
        for module in self.aux.values():
            module.reset_parameters(self.train_generators)
        self.ema_head = copy.deepcopy(self.head).requires_grad_(False)
        self.ema_aux = copy.deepcopy(self.aux).requires_grad_(False)
        if hasattr(self.ema_head, "sample_steps"):  # the EMA head only samples the critic's next actions
            self.ema_head.sample_steps = cfg.target_sample_steps
        self.act_generators = member_generators([s + 100 for s in self.seeds], dev)
        self.actor_params = list(self.head.parameters()) + list(self.aux.parameters())
        self._ema_params = list(self.ema_head.parameters()) + list(self.ema_aux.parameters())
        graphs = dev.type == "cuda" and cfg.cuda_graphs
        self.step_graphs = StepGraphs(self.train_generators, dev) if graphs else None
        self.act_graphs = InputGraphs(self.act_generators, dev) if graphs else None
        self._critic_stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
        adam = dict(capturable=graphs, lr_as_tensor=graphs and cfg.lr_decay)
        self.actor_opt = _make_adam(self.actor_params, cfg.lr, **adam)
        if self.critic is not None:
            self.critic_params = self.critic.online_parameters()
            self.critic_opt = _make_adam(self.critic_params, cfg.critic_lr, **adam)
        low = torch.as_tensor(self.action_space.low, dtype=torch.float32, device=dev)
        high = torch.as_tensor(self.action_space.high, dtype=torch.float32, device=dev)
        self._action_center, self._action_scale = (high + low) / 2, (high - low) / 2
        self.obs_mean = torch.zeros(self.obs_dim, device=dev)
        self.obs_std = torch.ones(self.obs_dim, device=dev)
        self._log_keys: List[str] = []
        self._log_sum: Optional[Tensor] = None
        self._log_count = 0
        self._last_actor_info: Dict[str, Tensor] = {}

    def _head_kwargs(self, head_cls) -> Dict[str, Any]:
        """Pass the config fields the head's constructor accepts (so new heads need no core edits)."""
        import inspect

        params = inspect.signature(head_cls.__init__).parameters
        kw = {k: v for k, v in self.config.to_dict().items() if k in params and k not in ("obs_dim", "action_dim", "members") and v != ""}
        if "max_action" in params:
            kw["max_action"] = 1.0  # the head works in [-1, 1]; the agent rescales to the Box bounds
        return kw

    def _critic_kwargs(self, critic_cls, what: str) -> Dict[str, Any]:
        """The critic settings its constructor takes (ensemble size and reduction); one it does not take
        must stay at its default, so that ``-p n_critics=5`` on the twin critic fails instead of doing nothing."""
        import inspect

        from .config import AgentConfig

        params = inspect.signature(critic_cls.__init__).parameters
        kw = {}
        for key in ("n_critics", "critic_reduce", "critic_lambda", "critic_lcb_k"):
            value = getattr(self.config, key)
            if key in params:
                kw[key] = value
            elif value != getattr(AgentConfig, key):
                raise ValueError(f"cannot build {what}: {key}={value!r} does not apply to critic {self.config.critic!r} "
                                 f"(it has a fixed set of Q-networks); use critic=ensemble-q")
        return kw

    # --- data ---------------------------------------------------------------------------------------
    def set_dataset(self, table: Mapping[str, np.ndarray], refit_obs_stats: bool = True) -> TransitionBuffer:
        """Put a transition table on the training device (actions rescaled to [-1, 1], obs normalised
        if ``normalize_obs``); statistics become part of the agent and of its checkpoints. A resumed or
        fine-tuned agent keeps the statistics its networks were trained with (``refit_obs_stats=False``)."""
        from .data.buffer import validate_table
        from .data.transforms import apply_reward_transform

        t = validate_table(apply_reward_transform(self.config.reward_tune, table))
        if t["observations"].shape[1] != self.obs_dim or t["actions"].shape[1] != self.action_dim:
            raise ValueError(
                f"dataset shapes obs {t['observations'].shape[1:]} / actions {t['actions'].shape[1:]} do not match the "
                f"agent's spaces ({self.obs_dim},) / ({self.action_dim},)"
            )
        center = self._action_center.cpu().numpy()
        scale = self._action_scale.cpu().numpy()
        t["actions"] = np.clip((t["actions"] - center) / scale, -1.0, 1.0)
        if self.config.normalize_obs:
            if refit_obs_stats:
                self.obs_mean = torch.as_tensor(t["observations"].mean(0), device=self.device)
                self.obs_std = torch.as_tensor(t["observations"].std(0) + 1e-3, device=self.device)
            mean, std = self.obs_mean.cpu().numpy(), self.obs_std.cpu().numpy()
            t["observations"] = (t["observations"] - mean) / std
            t["next_observations"] = (t["next_observations"] - mean) / std
        if self.step_graphs is not None:  # captured steps index the old dataset's tensors, acting the old statistics
            self.step_graphs.reset()
            self.act_graphs.reset()
        self.buffer = TransitionBuffer(t, self.device)
        return self.buffer

    # --- training -----------------------------------------------------------------------------------
    def _apply_grads(self, loss: Tensor, params: List[nn.Parameter], opt: torch.optim.Optimizer, members: int) -> Tensor:
        # autograd.grad w.r.t. these parameters only: the actor's Q term back-propagates through the
        # critic to its input but never computes the critic's weight gradients
        return self._step_with(torch.autograd.grad(loss, params), params, opt, members)

    def _step_with(self, grads, params: List[nn.Parameter], opt: torch.optim.Optimizer, members: int, norm: Optional[Tensor] = None) -> Tensor:
        """Clip per member (unless ``norm`` says the gradients come clipped already) and take the optimiser
        step with these gradients; returns the norms ``[M]``."""
        for p, g in zip(params, grads):
            p.grad = g if g.is_contiguous() else g.contiguous()
        if norm is None:
            norm = clip_grad_norm_members(params, self.config.grad_norm, members)
        opt.step()
        return norm

    def critic_target(self, batch: Dict[str, Tensor]) -> Tensor:
        """y = r + gamma (1 - done) min(Q1', Q2')(s', a') (the critic's reduction), a' from the EMA actor; ``[M, B]``."""
        cfg = self.config
        r, d = batch["rewards"], batch["terminals"]
        if cfg.gamma == 0:
            return r  # one-step task (the bandit): the critic regresses the reward
        with torch.no_grad():
            nobs = batch["next_obs"]
            M, B, _ = nobs.shape
            n = cfg.n_backup_samples if cfg.max_q_backup else 1
            rep = nobs.repeat_interleave(n, dim=1) if n > 1 else nobs
            ops = self._fused_target()
            if ops is not None:  # chain and target twins in one CPU operator, same noise as the eager path
                from .fused import target_q

                K = len(self.ema_head.chain(self.ema_head.sample_steps)["t"])
                noise = member_randn(self.train_generators, (K, rep.shape[1], self.action_dim), rep.device)
                q = target_q(ops, self.ema_head, self.critic.target, rep, noise)
            else:
                q = self.critic.target_values(rep, self._target_actions(rep))
            if n > 1:
                q = q.view(M, q.shape[1], B, n)
                if cfg.backup_order == "reduce-first":  # BCQ: each sample's reduced value, then the best sample
                    return r + (1.0 - d) * cfg.gamma * self.critic.reduce(q).max(-1).values
                q = q.max(-1).values  # Diffusion-QL: each network's best sample, then the reduction
            return r + (1.0 - d) * cfg.gamma * self.critic.reduce(q)

    def _fused_target(self):
        """The fused target operator's pieces when they apply (CPU, Mish diffusion head sampled as is, twin
        Mish critic, no target smoothing noise), else None."""
        from . import fused
        from .heads.diffusion import DiffusionHead
        from .nn import mish
        from .objectives.base import Objective

        from .critics.double_q import DoubleQCritic

        head, cfg = self.ema_head, self.config
        if not isinstance(head, DiffusionHead) or cfg.target_noise > 0 or type(self.objective).policy_sample is not Objective.policy_sample:
            return None
        if not isinstance(self.critic, DoubleQCritic):  # (twins or an ensemble: the operator returns every network's value)
            return None
        net = self.critic.target
        if any(n.act is not mish for n in (head.net, head.time_mlp, net)) or len(head.time_mlp.layers) != 2 or len(head.net.layers) < 2:
            return None
        return fused.applicable(self._action_center)

    def _target_actions(self, next_obs: Tensor) -> Tensor:
        """Next actions from the EMA (target) policy, with TD3's clipped smoothing noise if enabled."""
        cfg = self.config
        na = self.objective.policy_sample(self.ema_head, self.ema_aux, next_obs, self.train_generators)
        if cfg.target_noise > 0:
            noise = member_randn(self.train_generators, na.shape[1:], na.device) * cfg.target_noise
            na = (na + noise.clamp(-cfg.target_noise_clip, cfg.target_noise_clip)).clamp(-1.0, 1.0)
        return na

    def _update_critic(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """One optimiser step of the critic on its TD regression; returns its diagnostics."""
        cfg, M = self.config, self.members
        y = self.critic_target(batch)
        fused = getattr(self.critic, "regression_grads", None)
        fused = fused(batch["obs"], batch["actions"], y, cfg.grad_norm) if fused is not None else None
        if fused is not None:  # one CPU operator for forward, loss, backward and clipping
            critic_loss, norm, grads = fused
            return {"critic_loss": critic_loss, "critic_grad_norm": self._step_with(grads, self.critic_params, self.critic_opt, M, norm)}
        q = self.critic(batch["obs"], batch["actions"])
        critic_loss = (q - y.unsqueeze(1)).pow(2).mean(dim=2).sum(dim=1)
        return {"critic_loss": critic_loss, "critic_grad_norm": self._apply_grads(critic_loss.sum(), self.critic_params, self.critic_opt, M)}

    def _update_actor(self, batch: Dict[str, Tensor], critic=None) -> Dict[str, Tensor]:
        """One optimiser step of the policy (and the objective's networks); returns its diagnostics.
        ``critic``: what the objective sees as the critic (default the agent's own)."""
        cfg, M = self.config, self.members
        critic = self.critic if critic is None else critic
        fused = getattr(self.objective, "actor_grads", None)
        if fused is not None:
            fused = fused(self.head, critic, batch["obs"], batch["actions"], self.train_generators, aux=self.aux,
                          head_params=self.actor_params, critic_params=self.critic_params if self.critic is not None else None,
                          max_norm=cfg.grad_norm)
        if fused is not None:  # loss, gradients and clipping from one CPU operator
            actor_loss, parts, norm, grads = fused
            parts["actor_loss"] = actor_loss
            parts["actor_grad_norm"] = self._step_with(grads, self.actor_params, self.actor_opt, M, norm)
            return parts
        split = getattr(self.objective, "actor_loss_and_grads", None)
        if split is not None and isinstance(critic, _CriticAfter) and not len(self.aux):
            actor_loss, parts, grads = split(self.head, critic, batch["obs"], batch["actions"], self.train_generators, self.actor_params)
            parts["actor_loss"] = actor_loss
            parts["actor_grad_norm"] = self._step_with(grads, self.actor_params, self.actor_opt, M)
            return parts
        actor_loss, parts = self.objective.actor_loss(self.head, critic, batch["obs"], batch["actions"], self.train_generators,
                                                      aux=self.aux)
        parts["actor_loss"] = actor_loss
        parts["actor_grad_norm"] = self._apply_grads(actor_loss.sum(), self.actor_params, self.actor_opt, M)
        return parts

    def train_step(self, batch: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
        """One gradient step for every member; returns per-member diagnostics ``{name: [M]}`` (no sync).

        On a GPU (``cuda_graphs``) steps that sample their own batch replay captured CUDA graphs; their
        diagnostics are then overwritten by the next step of the same kind: clone what you keep.
        """
        if batch is None and self.buffer is None:
            raise RuntimeError("no dataset: call set_dataset(table) or learn() with a task first")
        cfg = self.config
        actor = self.num_timesteps % cfg.policy_delay == 0
        ema = None
        if actor:
            self.objective.step = self.num_timesteps
            if (self.num_timesteps // cfg.policy_delay) % cfg.ema_every == 0:
                # sound default: the EMA tracks the actor until averaging starts. The reference code
                # leaves it at the initial weights, so its first critic targets come from an untrained policy.
                ema = "average" if self.num_timesteps >= cfg.ema_start else (None if cfg.reference_quirks else "copy")
        with matmul_precision(cfg.matmul_precision, self.device):  # (graphs keep the kernels chosen at capture)
            if batch is None and self.step_graphs is not None:
                critic_info, actor_info = self.step_graphs.run((actor, ema, self.objective.graph_key()), lambda: self._step(None, actor, ema))
            else:
                critic_info, actor_info = self._step(batch, actor, ema)
        if actor:
            self._last_actor_info = actor_info
        info = {**critic_info, **self._last_actor_info}  # steps without an actor update report its last values
        self.num_timesteps += 1
        self._follow_lr_schedule()
        self._accumulate(info)
        return info

    def _step(self, batch: Optional[Dict[str, Tensor]], actor: bool, ema: Optional[str]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """The step's device work and nothing else (what a CUDA graph captures): sample, critic update,
        then if ``actor`` the actor update, the EMA (``"copy"``, ``"average"`` or None) and the target
        critic. Returns the critic's and the actor's diagnostics (the latter empty without an actor update)."""
        if batch is None:
            batch = self.buffer.sample(self.config.batch_size, self.train_generators)
        side = self._critic_stream if actor and self.critic is not None else None
        if side is not None:
            # GPU: the critic's update runs on a second stream while the actor samples its actions; the
            # actor waits for it where its loss first reads the critic (see _CriticAfter)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                critic_info = self._update_critic(batch)
        else:
            critic_info = self._update_critic(batch) if self.critic is not None else {}
        critic_info = {k: v.detach() for k, v in critic_info.items()}  # (a live loss would keep its graph alive)
        actor_info: Dict[str, Tensor] = {}
        if actor:
            seen = self.critic if side is None else _CriticAfter(self.critic, side)
            actor_info = {k: v.detach() for k, v in self._update_actor(batch, seen).items()}
            if side is not None:
                torch.cuda.current_stream(self.device).wait_stream(side)
            if ema is not None:
                self._update_ema(ema)
            if self.critic is not None:
                self.critic.polyak(self.config.tau)
        return critic_info, actor_info

    def _follow_lr_schedule(self) -> None:
        """Cosine decay of both learning rates to 0 at ``steps`` (``lr_decay``), from the step count alone,
        so a resumed run continues on the same schedule. A tensor lr (graphed steps) is filled in place."""
        cfg = self.config
        if not cfg.lr_decay:
            return
        total = max(cfg.steps, 1)
        factor = 0.5 * (1.0 + math.cos(math.pi * min(self.num_timesteps, total) / total))
        opts = [(self.actor_opt, cfg.lr)] + ([(self.critic_opt, cfg.critic_lr)] if self.critic is not None else [])
        for opt, base in opts:
            for group in opt.param_groups:
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(base * factor)
                else:
                    group["lr"] = base * factor

    @torch.no_grad()
    def _update_ema(self, mode: str) -> None:
        ema, online = foreach_pieces(self._ema_params), foreach_pieces(self.actor_params)
        if mode == "copy":
            torch._foreach_copy_(ema, online)
        else:
            torch._foreach_lerp_(ema, online, 1.0 - self.config.ema_decay)

    def _accumulate(self, info: Dict[str, Tensor]) -> None:
        if not self._log_keys:
            self._log_keys = list(info)
        vals = torch.stack([info[k].detach().float() for k in self._log_keys])
        self._log_sum = vals if self._log_sum is None else self._log_sum.add_(vals)
        self._log_count += 1

    def pop_metrics(self) -> Dict[str, np.ndarray]:
        """Mean of each diagnostic since the last call, per member (one host sync)."""
        if self._log_sum is None:
            return {}
        vals = (self._log_sum / self._log_count).cpu().numpy()
        self._log_sum, self._log_count = None, 0
        return {k: vals[i] for i, k in enumerate(self._log_keys)}

    # --- acting -------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False, head: Optional[nn.Module] = None) -> Tensor:
        """Actions for raw observations ``[M, B, obs_dim]`` -> ``[M, B, action_dim]`` in Box units.

        With a critic: sample ``n_candidates`` actions per state in one pass, score them with the target
        critic's min(Q1, Q2) and draw one with probability softmax(Q) (Gumbel-max, no host sync), or
        take the argmax when ``deterministic``. Without a critic: one sample per state. On a GPU
        (``cuda_graphs``) the policy's own acting replays a CUDA graph per batch shape.
        """
        with matmul_precision(self.config.matmul_precision, self.device):
            if head is None and self.act_graphs is not None and obs.is_cuda:
                return self.act_graphs.run((tuple(obs.shape), bool(deterministic)), obs, lambda x: self._act(x, deterministic, self.head))
            return self._act(obs, deterministic, head or self.head)

    def _act(self, obs: Tensor, deterministic: bool, head: nn.Module) -> Tensor:
        restore = getattr(head, "sample_steps", None)
        if restore is not None:
            head.sample_steps = self.config.sample_steps  # acting only: training chains keep their own
        obs = (obs - self.obs_mean) / self.obs_std
        M, B, _ = obs.shape
        N = self.config.n_candidates
        aux = self.aux if head is self.head else self.ema_aux
        if self.critic is None or N <= 1:
            a = self.objective.policy_sample(head, aux, obs, self.act_generators)
        else:
            rep = obs.repeat_interleave(N, dim=1)
            cand = self.objective.policy_sample(head, aux, rep, self.act_generators)
            q = self.critic.reduce(self.critic.target_values(rep, cand)).view(M, B, N)
            if not deterministic and not self.objective.greedy_acting:
                u = member_rand(self.act_generators, (B, N), obs.device).clamp_(1e-20, 1.0 - 1e-7)
                q = q - torch.log(-torch.log(u))
            k = q.argmax(dim=-1)
            a = torch.gather(cand.view(M, B, N, -1), 2, k[..., None, None].expand(M, B, 1, self.action_dim)).squeeze(2)
        if restore is not None:
            head.sample_steps = restore
        return a * self._action_scale + self._action_center

    def predict(
        self,
        observation: Union[np.ndarray, Dict[str, np.ndarray]],
        state: Optional[Tuple[np.ndarray, ...]] = None,
        episode_start: Optional[np.ndarray] = None,
        deterministic: bool = False,
    ) -> Tuple[np.ndarray, Optional[Tuple[np.ndarray, ...]]]:
        """SB3's predict: one observation -> one action, a batch -> a batch; returns ``(actions, state)``."""
        if isinstance(observation, dict):
            raise ValueError("predict: dict observations are not supported; dqltoolkit agents take a Box observation")
        obs = np.asarray(observation, dtype=np.float32)
        shape = tuple(self.observation_space.shape)
        if obs.shape == shape:
            single = True
        elif obs.ndim == len(shape) + 1 and tuple(obs.shape[1:]) == shape:
            single = False
        else:
            raise ValueError(
                f"predict: observation has shape {obs.shape}; expected {shape} for one observation "
                f"or (n_envs, {', '.join(map(str, shape))}) for a batch"
            )
        x = torch.as_tensor(obs.reshape(-1, self.obs_dim), device=self.device)
        a = self.act(x.unsqueeze(0).expand(self.members, -1, -1), deterministic)[0].cpu().numpy()
        a = np.clip(a, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)
        return (a[0] if single else a), state

    def set_random_seed(self, seed: int) -> None:
        """Reseed the action-sampling generators (member m gets ``seed + m``)."""
        for m, g in enumerate(self.act_generators):
            g.manual_seed(int(seed) + m)

    # --- SB3 compatibility -------------------------------------------------------------------------
    def get_env(self):
        return self._env

    def set_env(self, env) -> None:
        """As SB3 models do: a plain env is wrapped in ``Monitor`` (unless it is already) and a ``DummyVecEnv``,
        so ``evaluate_policy(model, model.get_env())`` reports the env's own episode returns."""
        from stable_baselines3.common.env_util import is_wrapped
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

        if env is not None and not isinstance(env, VecEnv):
            env = env if is_wrapped(env, Monitor) else Monitor(env)
            env = DummyVecEnv([lambda e=env: e])
        self._env = env

    def get_vec_normalize_env(self):
        return None

    @property
    def logger(self):
        if self._logger is None:
            from stable_baselines3.common.logger import configure

            self._logger = configure(None, [])  # silent, like an SB3 model with verbose=0
        return self._logger

    def set_logger(self, logger) -> None:
        self._logger = logger

    def learn(self, total_timesteps: int, callback=None, log_interval: Optional[int] = None, progress_bar: bool = False, reset_num_timesteps: bool = False, **_: Any) -> "Agent":
        """Run ``total_timesteps`` gradient steps on the dataset (offline: a timestep is a gradient step)."""
        from .training import run_learning

        if reset_num_timesteps:
            self.num_timesteps = 0
        run_learning(self, int(total_timesteps), callback=callback, log_interval=log_interval, progress_bar=progress_bar)
        return self

    def save(self, path: Union[str, Path], include_optimizer: bool = True) -> Path:
        from .checkpoint import save_agent

        return save_agent(self, path, include_optimizer=include_optimizer)

    @classmethod
    def from_task(cls, agent: str, env: str, seeds: Sequence[int] = (0,), device: Union[str, torch.device] = "auto", download: bool = False,
                  **overrides: Any) -> "Agent":
        """``Agent.from_task("diffusion-ql", "hopper-medium-v2", eta=2.0)``: a recipe for a task with its
        dataset loaded and its env set, ready for ``learn`` (see :func:`dqltoolkit.training.agent_for_task`)."""
        from .training import agent_for_task

        return agent_for_task(agent, env, seeds=seeds, device=device, download=download, **overrides)

    @classmethod
    def load(cls, path: Union[str, Path], env: Optional[gym.Env] = None, device: Union[str, torch.device] = "auto", **_: Any) -> "Agent":
        from .checkpoint import load_agent

        agent = load_agent(path, device=device)
        if env is not None:
            agent.set_env(env)
        return agent

    def __repr__(self) -> str:
        c = self.config
        return f"Agent(head={c.head!r}, critic={c.critic if self.critic is not None else None!r}, objective={c.objective!r}, members={self.members}, steps={self.num_timesteps})"
