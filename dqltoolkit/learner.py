"""The update: one gradient step of any head + critic + objective, eager, top to bottom.

This file is the algorithm. :meth:`Learner.step_body` samples a batch, updates the critic on its own TD
target and loss, then (every ``policy_delay`` steps) the actor on the objective's loss, the EMA policy
and the target critic. The three computations a backend may run faster (the TD target, the critic's
gradients, the actor's gradients) are the methods of :class:`EagerBackend` below, each a few lines over
the parts' own methods; a backend (dqltoolkit/backends/) replaces them only for parts whose exact class
declares that its math is the kernels' (dqltoolkit/capabilities.py), and is chosen once, when the
learner is built. Nothing here, and nothing in a part, asks which backend runs.

All networks carry a member dimension: ``seeds=(0, 1, 2)`` trains three independent agents in one
process, each drawing its own initial weights, batches and noise from its own generator, so that each
member equals a separate single-seed run.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .config import AgentConfig, ConfigError
from .data.transforms import apply_reward_transform
from .heads.samplers import SAMPLERS
from .nn import clip_grad_norm_members, foreach_pieces, member_generators, member_randint
from .objectives.base import sampler_option
from .precision import check_precision, matmul_precision
from .registry import CRITICS, HEADS, OBJECTIVES, UnknownNameError

#: the transition table lives on the training device and is sampled by index (no DataLoader, no host sync)
FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals")


def validate_table(table: Mapping[str, np.ndarray], source: str = "dataset") -> Dict[str, np.ndarray]:
    """Check fields, lengths and finiteness; return float32 arrays. Errors name the source and field."""
    missing = [k for k in FIELDS if k not in table]
    if missing:
        raise ValueError(f"{source}: missing field(s) {missing}; a transition table needs {list(FIELDS)}")
    out = {k: np.asarray(table[k], dtype=np.float32) for k in FIELDS}
    n = len(out["observations"])
    for k, v in out.items():
        if len(v) != n:
            raise ValueError(f"{source}: field {k!r} has {len(v)} rows, 'observations' has {n}")
        if not np.isfinite(v).all():
            raise ValueError(f"{source}: field {k!r} contains NaN or Inf values")
    for k in ("rewards", "terminals"):
        out[k] = out[k].reshape(n)
    if n == 0:
        raise ValueError(f"{source}: the dataset holds no transitions")
    return out


class TransitionBuffer:
    """Float32 tensors on one device; :meth:`sample` draws ``[members, batch]`` indices per member."""

    def __init__(self, table: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> None:
        t = validate_table(table)
        self.device = torch.device(device)
        self.obs = torch.as_tensor(t["observations"], device=self.device)
        self.actions = torch.as_tensor(t["actions"], device=self.device)
        self.rewards = torch.as_tensor(t["rewards"], device=self.device)
        self.next_obs = torch.as_tensor(t["next_observations"], device=self.device)
        self.terminals = torch.as_tensor(t["terminals"], device=self.device)

    def __len__(self) -> int:
        return self.obs.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    def sample(self, batch_size: int, generators: Sequence[torch.Generator]) -> Dict[str, Tensor]:
        idx = member_randint(generators, len(self), (batch_size,), self.device)
        flat, shape = idx.view(-1), tuple(idx.shape)

        def take(t: Tensor) -> Tensor:  # index_select: the same rows as t[idx], without advanced indexing's set-up
            return t.index_select(0, flat).view(*shape, *t.shape[1:])

        return {"obs": take(self.obs), "actions": take(self.actions), "rewards": take(self.rewards), "next_obs": take(self.next_obs),
                "terminals": take(self.terminals)}


#: what a kernel returns for an update: (loss [M], diagnostics {name: [M]}, gradients, per-seed norms or None)
Grads = Tuple[Tensor, Dict[str, Tensor], Sequence[Tensor], Optional[Tensor]]


def make_adam(params: List[nn.Parameter], lr: float, capturable: bool = False, lr_as_tensor: bool = False) -> torch.optim.Adam:
    """Fused Adam: one kernel for all parameters (CPU and CUDA); foreach where a build lacks it.

    ``capturable``: step counts stay on the device so CUDA graphs can replay the step; ``lr_as_tensor``:
    the learning rate lives in a device tensor too, so a graphed step follows the lr schedule.
    """
    kw: Dict[str, Any] = {"capturable": True} if capturable else {}
    rate: Any = torch.tensor(float(lr), device=params[0].device) if lr_as_tensor else lr
    try:
        opt = torch.optim.Adam(params, lr=rate, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(params, lr=rate, foreach=True, **kw)
    if capturable:
        # the warm-up steps before capture run eagerly by design: silence torch's one-off warning about that
        opt._warned_capturable_if_run_uncaptured = True
    return opt


def _part_kwargs(cls: type, values: Mapping[str, Any], what: str) -> Dict[str, Any]:
    """The declared settings, checked against the constructor so that a plugin's mistake is named."""
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing = [k for k in values if k not in params and not takes_any]
    if missing:
        raise TypeError(f"{what}: its Settings declare {missing} but {cls.__name__}.__init__ does not take them")
    return dict(values)


def _check_samplers(cfg: AgentConfig, head: Any, what: str) -> None:
    """Each configured sampler is registered, and the head's ``sample`` takes one (a clear error, not a TypeError mid-run)."""
    asked = {k: getattr(cfg, k) for k in ("sampler", "target_sampler", "q_sampler") if getattr(cfg, k, "")}
    for key, name in asked.items():
        if name not in SAMPLERS:
            raise ConfigError(f"cannot build {what}: {key}={str(name)[:60]!r} is no registered sampler; "
                              f"registered samplers: {', '.join(SAMPLERS.names())}")
    params = inspect.signature(head.sample).parameters
    if asked and "sampler" not in params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"cannot build {what}: head {cfg.head!r} has no choice of sampler (its sample takes no `sampler`), "
                          f"but {', '.join(f'{k}={v}' for k, v in asked.items())} is set")


class EagerBackend:
    """How a step runs when nothing is accelerated, and the base of every backend.

    The three kernels (:meth:`td_target`, :meth:`critic_grads`, :meth:`actor_grads`) are the pieces of a
    step that a backend may compute another way, written here over the parts' interfaces; :meth:`run_step`
    and :meth:`act` are where a backend may wrap a whole step or acting call (CUDA graphs, streams).
    """

    name = "eager"
    captures_steps = False  # optimisers keep their state on the device (CUDA graphs replay their steps)

    def describe(self) -> str:
        """One line for logs, repr and results.json: the backend and what it accelerates."""
        return self.name

    def run_step(self, learner: "Learner", batch: Optional[Dict[str, Tensor]], actor: bool,
                 ema: Optional[str]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        return learner.step_body(batch, actor, ema)

    def act(self, key: Any, obs: Tensor, fn: Any) -> Tensor:
        """``fn(obs)``: acting for a batch of observations (``key``: its shape and options)."""
        return fn(obs)

    def updates(self, learner: "Learner", critic_update: Optional[Callable[[], Dict[str, Tensor]]],
                actor_update: Optional[Callable[[Any], Dict[str, Tensor]]]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """The critic's update, then the actor's (given what it reads as the critic); either may be None.
        A backend may overlap them (the CUDA backend runs the critic's on a second stream)."""
        critic_info = critic_update() if critic_update is not None else {}
        return critic_info, (actor_update(learner.critic) if actor_update is not None else {})

    def reset(self) -> None:
        """Forget anything that holds the dataset's or the statistics' tensors (a new dataset comes)."""

    def td_target(self, learner: "Learner", batch: Dict[str, Tensor]) -> Tensor:
        return learner.critic.compute_target(batch, learner.next_actions, learner.train_generators)

    def critic_grads(self, learner: "Learner", batch: Dict[str, Tensor], target: Tensor) -> Grads:
        loss, info = learner.critic.compute_loss(batch, target)
        # autograd.grad w.r.t. the critic's parameters only
        return loss, info, torch.autograd.grad(loss.sum(), learner.critic_params), None

    def actor_grads(self, learner: "Learner", batch: Dict[str, Tensor], critic: Any) -> Grads:
        loss, parts = learner.objective.actor_loss(learner.head, critic, batch["obs"], batch["actions"], learner.train_generators,
                                                   aux=learner.aux)
        # w.r.t. the actor's parameters only: the Q term reaches the critic's input, never its weights' gradients
        grads = torch.autograd.grad(loss.sum(), learner.actor_params, allow_unused=True)
        return loss, parts, [torch.zeros_like(p) if g is None else g for p, g in zip(learner.actor_params, grads)], None


class Learner:
    """Builds the parts a configuration names and updates them: the training half of an agent."""

    def __init__(self, config: AgentConfig, obs_dim: int, action_dim: int, seeds: Sequence[int], device: torch.device,
                 backend: Optional[Callable[["Learner"], EagerBackend]] = None) -> None:
        """``backend``: chooses how steps run once the parts exist (dqltoolkit.backends.select_backend);
        None runs every step eagerly."""
        self.config, self.obs_dim, self.action_dim = config, int(obs_dim), int(action_dim)
        self.seeds = [int(s) for s in seeds]
        self.members, self.device = len(self.seeds), device
        self.num_timesteps = 0
        self.buffer: Optional[TransitionBuffer] = None
        self.online_buffer: Optional[Any] = None  # online fine-tuning's experience (dqltoolkit/online.py), checkpointed
        self._build_parts()
        self.precision_scope = matmul_precision(config.matmul_precision, device)  # (entered by every step and acting call)
        self.backend = backend(self) if backend is not None else EagerBackend()
        graphs = self.backend.captures_steps
        adam = dict(capturable=graphs, lr_as_tensor=graphs and config.lr_decay)
        self.actor_opt = make_adam(self.actor_params, config.lr, **adam)
        self.critic_opt = make_adam(self.critic_params, config.critic_lr, **adam) if self.critic is not None else None
        self._log_keys: List[str] = []
        self._log_sum: Optional[Tensor] = None
        self._log_count = 0
        self._last_actor_info: Dict[str, Tensor] = {}

    # --- construction -----------------------------------------------------------------------------
    def _build_parts(self) -> None:
        cfg, M, dev = self.config, self.members, self.device
        check_precision(cfg.matmul_precision)
        what = f"head {cfg.head!r} with critic {cfg.critic!r} and objective {cfg.objective!r}"
        try:
            head_cls, critic_cls, obj_cls = HEADS.get(cfg.head), CRITICS.get(cfg.critic), OBJECTIVES.get(cfg.objective)
        except UnknownNameError as exc:
            raise UnknownNameError(f"cannot build {what}: {exc}") from None
        self.objective = obj_cls(**_part_kwargs(obj_cls, cfg.part_settings("objective"), f"objective {cfg.objective!r}"))
        if self.objective.needs_differentiable_samples and not getattr(head_cls, "differentiable_samples", False):
            raise ConfigError(f"cannot build {what}: objective {cfg.objective!r} needs differentiable samples, "
                              f"but head {cfg.head!r} cannot give them")
        head_kw = _part_kwargs(head_cls, cfg.part_settings("head"), f"head {cfg.head!r}")
        if "max_action" in inspect.signature(head_cls.__init__).parameters:
            head_kw["max_action"] = 1.0  # heads work in [-1, 1]; acting rescales to the Box bounds
        self.head = head_cls(self.obs_dim, self.action_dim, members=M, **head_kw).to(dev)
        _check_samplers(cfg, self.head, what)
        self.critic = None
        if self.objective.uses_critic:
            kw = _part_kwargs(critic_cls, cfg.part_settings("critic"), f"critic {cfg.critic!r}")
            self.critic = critic_cls(self.obs_dim, self.action_dim, members=M, **kw).to(dev)
        gen_dev = "cpu" if dev.type == "meta" else dev  # (a meta learner, built for its shapes alone, draws nothing)
        self.train_generators = member_generators(self.seeds, gen_dev)
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
        self.actor_params = list(self.head.parameters()) + list(self.aux.parameters())
        self._ema_params = list(self.ema_head.parameters()) + list(self.ema_aux.parameters())
        self.critic_params = self.critic.online_parameters() if self.critic is not None else []
        self.act_generators = member_generators([s + 100 for s in self.seeds], gen_dev)
        self.obs_mean = torch.zeros(self.obs_dim, device=dev)
        self.obs_std = torch.ones(self.obs_dim, device=dev)
        self.action_center = torch.zeros(self.action_dim, device=dev)
        self.action_scale = torch.ones(self.action_dim, device=dev)

    def state_modules(self) -> Dict[str, Optional[nn.Module]]:
        """Every network a checkpoint holds, by prefix (the one declared list that saving and loading share)."""
        return {"head.": self.head, "ema.": self.ema_head, "aux.": self.aux, "ema_aux.": self.ema_aux, "critic.": self.critic}

    def optimisers(self) -> Dict[str, torch.optim.Optimizer]:
        """Every optimiser a training checkpoint holds, by name."""
        return {"actor": self.actor_opt, **({"critic": self.critic_opt} if self.critic_opt is not None else {})}

    # --- data ---------------------------------------------------------------------------------------
    def set_dataset(self, table: Mapping[str, np.ndarray], refit_obs_stats: bool = True) -> TransitionBuffer:
        """Put a transition table on the training device (actions rescaled to [-1, 1], obs normalised if
        ``normalize_obs``); statistics become part of the agent and of its checkpoints. A resumed or
        fine-tuned agent keeps the statistics its networks were trained with (``refit_obs_stats=False``)."""
        t = validate_table(apply_reward_transform(self.config.reward_tune, table))
        if t["observations"].shape[1] != self.obs_dim or t["actions"].shape[1] != self.action_dim:
            raise ValueError(
                f"dataset shapes obs {t['observations'].shape[1:]} / actions {t['actions'].shape[1:]} do not match the "
                f"agent's spaces ({self.obs_dim},) / ({self.action_dim},)"
            )
        center, scale = self.action_center.cpu().numpy(), self.action_scale.cpu().numpy()
        t["actions"] = np.clip((t["actions"] - center) / scale, -1.0, 1.0)
        if self.config.normalize_obs:
            if refit_obs_stats:
                self.obs_mean = torch.as_tensor(t["observations"].mean(0), device=self.device)
                self.obs_std = torch.as_tensor(t["observations"].std(0) + 1e-3, device=self.device)
            mean, std = self.obs_mean.cpu().numpy(), self.obs_std.cpu().numpy()
            t["observations"] = (t["observations"] - mean) / std
            t["next_observations"] = (t["next_observations"] - mean) / std
        self.backend.reset()  # (captured steps index the old dataset's tensors, captured acting the old statistics)
        self.buffer = TransitionBuffer(t, self.device)
        return self.buffer

    # --- the step -----------------------------------------------------------------------------------
    def train_step(self, batch: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
        """One gradient step for every member; returns per-member diagnostics ``{name: [M]}`` (no sync).

        A backend that replays captured steps (CUDA graphs) returns its static outputs, which the next step
        of the same kind overwrites: clone what you keep.
        """
        if batch is None and self.buffer is None:
            raise RuntimeError("no dataset: call agent.set_dataset(table), or build the agent with Agent.from_task(recipe, task)")
        cfg = self.config
        actor = self.num_timesteps % cfg.policy_delay == 0
        ema = None
        if actor:
            self.objective.step = self.num_timesteps
            if (self.num_timesteps // cfg.policy_delay) % cfg.ema_every == 0:
                # sound default: the EMA tracks the actor until averaging starts. The reference code
                # leaves it at the initial weights, so its first critic targets come from an untrained policy.
                ema = "average" if self.num_timesteps >= cfg.ema_start else (None if cfg.reference_quirks else "copy")
        with self.precision_scope:
            critic_info, actor_info = self.backend.run_step(self, batch, actor, ema)
        if actor:
            self._last_actor_info = actor_info
        if not self._log_keys and set(critic_info) & set(actor_info):  # (checked once: the first step's keys are the run's)
            raise ValueError(f"the critic's and the objective's diagnostics share the names {sorted(set(critic_info) & set(actor_info))}: "
                             f"rename one side's keys")
        info = {**critic_info, **self._last_actor_info}  # steps without an actor update report its last values
        self.num_timesteps += 1
        self.follow_lr_schedule()
        self._accumulate(info)
        return info

    def step_body(self, batch: Optional[Dict[str, Tensor]], actor: bool, ema: Optional[str]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """The step's device work: sample, critic update, then if ``actor`` the actor update, the EMA
        (``"copy"``, ``"average"`` or None) and the target critic."""
        if batch is None:
            batch = self.buffer.sample(self.config.batch_size, self.train_generators)
        critic_info, actor_info = self.backend.updates(
            self, (lambda: self.update_critic(batch)) if self.critic is not None else None,
            (lambda critic: self.update_actor(batch, critic)) if actor else None)
        if actor:
            if ema is not None:
                self.update_ema(ema)
            if self.critic is not None:
                self.critic.polyak()
        return critic_info, actor_info

    def update_critic(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """One optimiser step of the critic on its own TD target and loss."""
        target = self.backend.td_target(self, batch)
        loss, info, grads, norm = self.backend.critic_grads(self, batch, target)
        norm = self.apply_gradients(grads, self.critic_params, self.critic_opt, norm)
        return {k: v.detach() for k, v in {"critic_loss": loss, **info, "critic_grad_norm": norm}.items()}

    def update_actor(self, batch: Dict[str, Tensor], critic: Any = None) -> Dict[str, Tensor]:
        """One optimiser step of the policy (and the objective's networks). ``critic``: what the objective
        reads as the critic (default the learner's own)."""
        loss, parts, grads, norm = self.backend.actor_grads(self, batch, self.critic if critic is None else critic)
        norm = self.apply_gradients(grads, self.actor_params, self.actor_opt, norm)
        return {k: v.detach() for k, v in {**parts, "actor_loss": loss, "actor_grad_norm": norm}.items()}

    def next_actions(self, next_obs: Tensor) -> Tensor:
        """The target policy's actions for the critic's TD target: the EMA policy, ``target_sample_steps`` steps
        of ``target_sampler`` (passed only when set: heads and objectives that predate samplers work)."""
        steps = self.config.target_sample_steps or None
        return self.objective.policy_sample(self.ema_head, self.ema_aux, next_obs, self.train_generators, steps=steps,
                                            **sampler_option(self.config.target_sampler))

    def apply_gradients(self, grads: Sequence[Tensor], params: List[nn.Parameter], opt: torch.optim.Optimizer,
                        norm: Optional[Tensor] = None) -> Tensor:
        """Clip per member (unless ``norm`` says the gradients come clipped already) and step ``opt``; the norms ``[M]``."""
        for p, g in zip(params, grads):
            p.grad = g if g.is_contiguous() else g.contiguous()
        if norm is None:
            norm = clip_grad_norm_members(params, self.config.grad_norm, self.members)
        opt.step()
        return norm

    @torch.no_grad()
    def update_ema(self, mode: str) -> None:
        ema, online = foreach_pieces(self._ema_params), foreach_pieces(self.actor_params)
        if mode == "copy":
            torch._foreach_copy_(ema, online)
        else:
            torch._foreach_lerp_(ema, online, 1.0 - self.config.ema_decay)

    def follow_lr_schedule(self) -> None:
        """Cosine decay of both learning rates to 0 at ``steps`` (``lr_decay``), from the step count alone,
        so a resumed run continues on the same schedule. A tensor lr (graphed steps) is filled in place."""
        cfg = self.config
        if not cfg.lr_decay:
            return
        total = max(cfg.steps, 1)
        factor = 0.5 * (1.0 + math.cos(math.pi * min(self.num_timesteps, total) / total))
        opts = [(self.actor_opt, cfg.lr)] + ([(self.critic_opt, cfg.critic_lr)] if self.critic_opt is not None else [])
        for opt, base in opts:
            for group in opt.param_groups:
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(base * factor)
                else:
                    group["lr"] = base * factor

    # --- metrics -------------------------------------------------------------------------------------
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
