"""LoRAvenModel: the AdaptedModel the training loop talks to (decisions, events, metrics, artifacts).

Per step the loop calls ``after_optimizer_step(step, loss)``; here that costs one on-device add (loss
accumulation) except on decision steps, the only place with host syncs. The first decision is made after the
first optimizer step (loop step 1, the run's step 0; the energy scheduler enforces its budget from there), then
every ``update_every`` steps, with ``update_every`` and ``min_steps_between_changes`` clamped to
``max(1, total_steps // 4)``: a run shorter than the interval would otherwise never decide (a 4-step smoke
run of ``linear`` and ``energy`` gave identical traces). The effective values are in ``summary()``.
the mean loss and one stacked tensor of per-layer observations are read back once. Observation (batch
mean, RMS, a row sample, gradient norms) is switched on only for the forward/backward of decision steps.
"""

from __future__ import annotations

import csv
import math
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loraven.adapters.base import AdaptedModel, NotSaved
from loraven.adapters.loraven.config import AdapterConfig, SchedulerConfig
from loraven.adapters.loraven.energy_model import EnergyModel
from loraven.adapters.loraven.estimators import Workload
from loraven.adapters.loraven.events import EventMonitor, EventRow
from loraven.adapters.loraven.hebbian import hebbian_update
from loraven.adapters.loraven.layer import DynamicLowRankLayer
from loraven.adapters.loraven.schedulers import Observation, build_scheduler, diversity
from loraven.adapters.loraven.scorer import ScorerBank, spectral_entropy


def _grad_hook(layer: DynamicLowRankLayer, p: torch.Tensor) -> None:
    if layer.observe and p.grad is not None:
        sq = p.grad.detach().float().pow(2).sum()
        layer._grad_sq = sq if layer._grad_sq is None else layer._grad_sq + sq


TRACE_HEADER = ["step", "module", "rank"]
EVENT_HEADER = ["step", "module", "event", "old_rank", "new_rank"]


class LoRAvenModel(AdaptedModel):
    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, DynamicLowRankLayer],
        acfg: AdapterConfig,
        scfg: SchedulerConfig,
        seed: int = 0,
        total_steps: int = 0,
    ) -> None:
        super().__init__(model)
        self.layers = layers
        self.acfg, self.scfg = acfg, scfg
        cap = max(1, int(total_steps) // 4) if total_steps and total_steps > 0 else None
        self.update_every = min(scfg.update_every, cap) if cap else scfg.update_every
        self.min_steps_between_changes = (
            min(scfg.min_steps_between_changes, cap) if cap else scfg.min_steps_between_changes
        )
        scfg.min_steps_between_changes = self.min_steps_between_changes  # the scheduler's hysteresis reads it
        self.energy = EnergyModel.from_config(scfg.energy_model)
        self.scheduler_impl = build_scheduler(scfg, self.energy)
        ev = scfg.events
        self.monitor = EventMonitor(ev.target_loss, ev.error_threshold, ev.performance_drop_pct, ev.loss_ema)
        self.dynamic = scfg.name != "static"
        self.observing = self.dynamic or acfg.hebbian
        device = next(iter(layers.values())).U.device
        self.scorers = ScorerBank(
            {n: lay.in_features for n, lay in layers.items()} if self.dynamic else {},
            device,
            scfg.scorer.lr,
            scfg.scorer.steps,
            scfg.scorer.buffer,
            seed=seed,
        )
        for layer in layers.values():
            layer.probe_rows = scfg.scorer.probe_rows
            layer._grad_sq = None
            if self.dynamic:
                if scfg.gradient_weight > 0:
                    for p in (layer.U, layer.S, layer.V):
                        p.register_post_accumulate_grad_hook(partial(_grad_hook, layer))
        self.step = 0
        self._loss_acc: torch.Tensor | None = None
        self._loss_n = 0
        self.trace: list[tuple[int, str, int]] = [(0, n, lay.r) for n, lay in layers.items()]
        self.events: list[EventRow] = []
        self.n_decisions = 0
        self.last_scores: dict[str, float] = {}
        self._set_observe(True)  # the first forward is observed once (token counts for the estimators)

    # ------------------------------------------------------------------ contract
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def regularization_loss(self) -> torch.Tensor | None:
        l2, orth = self.acfg.l2, self.acfg.orthogonality
        if not (l2 or orth):
            return None
        return sum(layer.regularization_loss(l2, orth) for layer in self.layers.values())

    def after_optimizer_step(self, step: int, loss: torch.Tensor) -> None:
        self.step = step
        if not self.observing:
            if step == 1:
                self._set_observe(False)
            return
        ue = self.update_every
        if self.dynamic:
            d = loss.detach()
            self._loss_acc = d if self._loss_acc is None else self._loss_acc + d
            self._loss_n += 1
        if (step - 1) % ue == 0:  # steps 1, 1 + ue, ...: the first optimizer step decides
            self._decide(step)
        self._set_observe(step % ue == 0)

    def step_metrics(self) -> dict[str, float]:
        ranks = [layer.r for layer in self.layers.values()]
        out = {
            "loraven/rank_mean": sum(ranks) / max(len(ranks), 1),
            "loraven/rank_min": float(min(ranks)),
            "loraven/rank_max": float(max(ranks)),
            "loraven/n_events": float(len(self.events)),
            "loraven/n_rank_changes": float(len(self.trace) - len(self.layers)),
            "loraven/pred_energy_j": self.predicted_energy(),
            "loraven/pred_energy_rmax_j": self.predicted_energy(at_rmax=True),
        }
        if self.scheduler_impl.last_total_budget:
            out["loraven/budget_j"] = self.scheduler_impl.last_total_budget
            out["loraven/budget_use"] = out["loraven/pred_energy_j"] / self.scheduler_impl.last_total_budget
        if self.last_scores:
            out["loraven/score_mean"] = sum(self.last_scores.values()) / len(self.last_scores)
        return out

    def ranks(self) -> dict[str, int]:
        return {name: layer.r for name, layer in self.layers.items()}

    def write_artifacts(self, run_dir: Path) -> list[Path]:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        event_rows = [(e.step, e.module, e.event, e.old_rank, e.new_rank) for e in self.events]
        for fname, header, rows in (
            ("rank_trace.csv", TRACE_HEADER, self.trace_rows()),
            ("loraven_events.csv", EVENT_HEADER, event_rows),
        ):
            path = run_dir / fname
            tmp = path.with_suffix(".csv.tmp")
            with tmp.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(header)
                writer.writerows(rows)
            tmp.replace(path)
            paths.append(path)
        return paths

    def artifact_tables(self) -> Mapping[str, Any]:
        import pandas as pd

        return {
            "rank_trace": pd.DataFrame(self.trace_rows(), columns=TRACE_HEADER),
            "loraven_events": pd.DataFrame([e.__dict__ for e in self.events], columns=EVENT_HEADER),
        }

    def summary(self) -> dict[str, Any]:
        ranks = list(self.ranks().values())
        out: dict[str, Any] = {
            **super().summary(),
            "mode": self.acfg.mode,
            "r_min": min(lay.r_min for lay in self.layers.values()),
            "r_max": max(lay.r_max for lay in self.layers.values()),
            "mean_rank": sum(ranks) / max(len(ranks), 1),
            "n_layers": len(ranks),
            "n_events": len(self.events),
            "events_by_type": dict(Counter(e.event for e in self.events)),
            "n_rank_changes": len(self.trace) - len(self.layers),
            "n_decisions": self.n_decisions,
            "predicted_energy_j": self.predicted_energy(),
            "predicted_energy_rmax_j": self.predicted_energy(at_rmax=True),
            "energy_model": "loraven-analytic (Horowitz 2014 constants; a prediction, not a measurement)"
            + (
                f", calibrated by {self.scfg.energy_model['calibration']}"
                if self.scfg.energy_model.get("calibration")
                else ", uncalibrated"
            ),
            "update_every": self.update_every,
            "min_steps_between_changes": self.min_steps_between_changes,
            "rank_bucket": self.scfg.rank_bucket,
        }
        if self.scheduler_impl.last_total_budget:
            out["budget_j"] = self.scheduler_impl.last_total_budget
        return out

    def prepare_for_inference(self) -> None:
        """``auto`` (default) merges every layer, as every other method (see ``AdaptedModel``): adapter mode
        folds ΔW into W0, replace mode evaluates the dense U_r·diag(S_r)·V_rᵀ. ``fused``/``factored`` stay
        available for the benchmarks; ``eval_path`` then says so. Gated layers cannot merge (per-token gate)."""
        self._set_observe(False)
        used = set()
        for layer in self.layers.values():
            path = self.acfg.inference_path
            if path == "auto":
                path = "merge"
            if layer.gate is not None:
                path = "factored"
            if path == "merge":
                layer.merge()
            elif path == "fused":
                layer.set_path("fused")
            used.add({"merge": "merged"}.get(path, path))
        self.eval_path = "+".join(sorted(used))

    # ------------------------------------------------------------------ saving
    def save_adapter(self, folder: Path) -> dict[str, Any]:
        """Adapter mode: the final active-rank factors as a standard peft LoRA adapter.

        Each layer computes W0·x + b + scaling·U_r·diag(S_r)·V_rᵀ·dropout(x) (``DynamicLowRankLayer``); peft LoRA
        computes W0·x + b + (lora_alpha/r)·B·A·dropout(x). So A = diag(S_r)·V_rᵀ (r×in), B = U_r (out×r) and
        lora_alpha = scaling·r per module (``alpha_pattern``; the rank in ``rank_pattern``): the same function at the
        final rank r of each layer. The factors are read as they are (merging folds ΔW into W0 and leaves U, S, V
        unchanged). Replace mode and gated layers have no LoRA form (:class:`NotSaved`).
        """
        from loraven.adapters.export import write_peft_lora

        if self.acfg.mode != "adapter":
            raise NotSaved(
                "adapter.mode=replace: W itself became U·diag(S)·Vᵀ, so there is no adapter apart from the model "
                "(save.full_model=true saves the changed model)"
            )
        if any(layer.gate is not None for layer in self.layers.values()):
            raise NotSaved("adapter.gate=true: the per-token gate over rank blocks has no peft LoRA equivalent")
        factors, alphas = {}, {}
        with torch.no_grad():
            for name, layer in self.layers.items():
                u, s, v = layer.active_factors()
                factors[name] = ((s[:, None] * v.T).float(), u.float())
                alphas[name] = layer.scaling * layer.r
        info = write_peft_lora(folder, factors, alphas, dropout=float(self.acfg.dropout))
        return {**info, "exported_from": "loraven adapter mode (A = diag(S_r)·V_rᵀ, B = U_r, alpha = scaling·r)"}

    def save_model(self, folder: Path) -> dict[str, Any]:
        """Replace mode: the model with each replaced layer's dense weight U_r·diag(S_r)·V_rᵀ (and its bias) under
        the original Linear's names, so it loads as the base architecture (``from_pretrained``). Adapter mode: the
        base model with ΔW merged in (W0 + scaling·U_r·diag(S_r)·V_rᵀ)."""
        from loraven.adapters.export import save_whole_model

        return save_whole_model(self.model, folder, self._dense_state_dict())

    def changed_bytes(self) -> int:
        from loraven.adapters.export import state_bytes

        return state_bytes(self._dense_state_dict())

    @torch.no_grad()
    def _dense_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict with every LoRAven layer written as the ``nn.Linear`` it stands for."""
        prefixes = tuple(f"{name}." for name in self.layers)
        state = {k: v for k, v in self.model.state_dict().items() if not k.startswith(prefixes)}
        for name, layer in self.layers.items():
            if layer.mode == "adapter":
                w = layer.base_layer.weight
                state[f"{name}.weight"] = w.detach().clone() if layer.merged else (w + layer.delta_weight().to(w.dtype))
            else:
                state[f"{name}.weight"] = layer.delta_weight().detach().clone()
            bias = layer._bias()
            if bias is not None:
                state[f"{name}.bias"] = bias.detach().clone()
        return state

    # ------------------------------------------------------------------ mid-run checkpoints
    LAYER_STATE = ("r", "_parked_hi", "observe", "obs_tokens", "obs_mean", "obs_rms", "obs_rows", "obs_out_mean")

    def state_dict_extra(self) -> dict[str, Any]:
        """Everything a decision depends on besides U, S, V (which the checkpoint saves as parameters): each
        layer's active rank, parked columns and last observation; the loss accumulator; the event monitor; the
        scheduler's per-layer EMAs, feature windows and last changes; the energy scheduler's budget manager;
        the scorers (weights, Adam, replay buffers); the rank trace and events so far."""
        sched = self.scheduler_impl
        manager = getattr(sched, "manager", None)
        return {
            "step": self.step,
            "loss_acc": self._loss_acc,
            "loss_n": self._loss_n,
            "n_decisions": self.n_decisions,
            "last_scores": dict(self.last_scores),
            "trace": [list(row) for row in self.trace],
            "events": [[e.step, e.module, e.event, e.old_rank, e.new_rank] for e in self.events],
            "monitor": {"ema": self.monitor.ema, "best": self.monitor.best},
            "layers": {
                name: {
                    **{k: getattr(lay, k) for k in self.LAYER_STATE},
                    "grad_sq": lay._grad_sq,
                    "parked": None if lay._parked is None else list(lay._parked),
                }
                for name, lay in self.layers.items()
            },
            "scheduler": {
                "last_total_budget": sched.last_total_budget,
                "manager": None
                if manager is None
                else {"total_budget": manager.total_budget, "scaling": manager.budget_scaling_factor},
                "layers": {
                    name: {
                        "score_ema": st.score_ema,
                        "grad_ema": st.grad_ema,
                        "features": list(st.features),
                        "last_change": st.last_change,
                    }
                    for name, st in sched.state.items()
                },
            },
            "scorers": {
                "nets": {name: net.state_dict() for name, net in self.scorers.nets.items()},
                "opt": None if self.scorers.opt is None else self.scorers.opt.state_dict(),
                "feats": {name: list(q) for name, q in self.scorers.feats.items()},
                "targets": {name: list(q) for name, q in self.scorers.targets.items()},
                "updates": self.scorers.updates,
            },
        }

    def load_state_extra(self, state: Mapping[str, Any]) -> None:
        from loraven.adapters.loraven.budget import BudgetManager
        from loraven.adapters.loraven.schedulers import LayerState

        if set(state["layers"]) != set(self.layers) or set(state["scorers"]["nets"]) != set(self.scorers.nets):
            raise ValueError("the checkpoint's LoRAven layers are not this model's")
        self.step, self._loss_acc, self._loss_n = int(state["step"]), state["loss_acc"], int(state["loss_n"])
        self.n_decisions, self.last_scores = int(state["n_decisions"]), dict(state["last_scores"])
        self.trace = [(int(s), str(m), int(r)) for s, m, r in state["trace"]]
        self.events = [EventRow(int(s), str(m), str(e), int(a), int(b)) for s, m, e, a, b in state["events"]]
        self.monitor.ema, self.monitor.best = state["monitor"]["ema"], state["monitor"]["best"]
        for name, saved in state["layers"].items():
            lay = self.layers[name]
            if not lay.r_min <= int(saved["r"]) <= lay.r_max:
                raise ValueError(f"layer {name}: rank {saved['r']} outside [{lay.r_min}, {lay.r_max}]")
            for key in self.LAYER_STATE:
                setattr(lay, key, saved[key])
            lay._grad_sq = saved["grad_sq"]
            lay._parked = None if saved["parked"] is None else tuple(t.to(lay.U.device) for t in saved["parked"])
            lay._fused_key = None
        sched, saved = self.scheduler_impl, state["scheduler"]
        sched.last_total_budget = saved["last_total_budget"]
        if saved["manager"] is not None:  # the energy scheduler builds it at its first decision
            sched.manager = BudgetManager(
                saved["manager"]["total_budget"], sched.floor, sched.headroom, saved["manager"]["scaling"]
            )
        sched.state = {}
        for name, st in saved["layers"].items():
            layer_state = LayerState(
                score_ema=st["score_ema"],
                grad_ema=st["grad_ema"],
                features=deque(st["features"], maxlen=self.scfg.diversity_window),
                last_change=int(st["last_change"]),
            )
            sched.state[name] = layer_state
        bank, saved = self.scorers, state["scorers"]
        for name, net in bank.nets.items():
            net.load_state_dict(saved["nets"][name])
        if bank.opt is not None:
            bank.opt.load_state_dict(saved["opt"])
        for name in bank.nets:
            bank.feats[name].clear()
            bank.feats[name].extend(saved["feats"][name])
            bank.targets[name].clear()
            bank.targets[name].extend(saved["targets"][name])
        bank.updates = int(saved["updates"])

    # ------------------------------------------------------------------ helpers
    def trace_rows(self) -> list[tuple[int, str, int]]:
        rows = list(self.trace)
        if self.step > 0:
            rows += [(self.step, n, lay.r) for n, lay in self.layers.items()]
        return rows

    def predicted_energy(self, at_rmax: bool = False) -> float:
        """Predicted joules of one training step's low-rank paths (energy model, last observed batch)."""
        total = 0.0
        for layer in self.layers.values():
            if layer.obs_tokens:
                r = layer.r_max if at_rmax else layer.r
                total += self.energy.energy(
                    Workload(layer.obs_tokens, layer.in_features, layer.out_features, r, layer.U.element_size())
                )
        return total

    def _set_observe(self, on: bool) -> None:
        for layer in self.layers.values():
            layer.observe = on

    @torch.no_grad()
    def _decide(self, step: int) -> None:
        """A decision step: loss events, observations (one sync), scheduler, rank changes, Hebbian."""
        self.n_decisions += 1
        loss_events: list[str] = []
        if self._loss_acc is not None:
            mean_loss = float(self._loss_acc) / max(self._loss_n, 1)
            self._loss_acc, self._loss_n = None, 0
            if not math.isfinite(mean_loss):  # diverged: observations are garbage; hold ranks, let the loop stop
                for lay in self.layers.values():
                    lay.obs_rows = None
                return
            loss_events = self.monitor.update(mean_loss)
        observed = {n: lay for n, lay in self.layers.items() if lay.obs_rows is not None and lay.obs_tokens}
        if self.dynamic and observed:
            observations = self._observations(observed)
            old = {n: lay.r for n, lay in self.layers.items()}
            new, layer_events = self.scheduler_impl.decide(observations, step, loss_events)
            for name, r in new.items():
                if r != old[name]:
                    self.layers[name].set_rank(r)
                    self.trace.append((step, name, r))
            if loss_events:
                before, after = sum(old.values()), sum(lay.r for lay in self.layers.values())
                self.events += [EventRow(step, "*", e, before, after) for e in loss_events]
            self.events += [EventRow(step, n, e, old[n], self.layers[n].r) for n, e in layer_events]
        if self.acfg.hebbian:
            for lay in observed.values():
                if lay.obs_out_mean is not None:
                    hebbian_update(lay.U, lay.V, lay.r, lay.obs_mean, lay.obs_out_mean, self.acfg.hebbian_lr)
        for lay in self.layers.values():
            lay.obs_rows = None
            lay._grad_sq = None

    def _observations(self, observed: dict[str, DynamicLowRankLayer]) -> list[Observation]:
        feats = {n: (lay.obs_mean.float() / (lay.obs_rms + 1e-6)).detach() for n, lay in observed.items()}
        targets = {n: spectral_entropy(lay.obs_rows) for n, lay in observed.items()}
        scores = self.scorers.update(feats, targets)
        rows = []
        for name, lay in observed.items():
            feat, target, score = feats[name], targets[name], scores[name]
            st = self.scheduler_impl.layer_state(name)
            st.features.append(feat)
            div = diversity(st.features).to(feat.device)
            u, s, v = lay.active_factors()
            pnorm = torch.sqrt(u.float().pow(2).sum() + s.float().pow(2).sum() + v.float().pow(2).sum())
            gsq = lay._grad_sq if lay._grad_sq is not None else feat.new_zeros(())
            rows.append(
                torch.stack([score.float(), div.float(), (gsq.sqrt() / (pnorm + 1e-12)).float(), target.float()])
            )
        values = torch.stack(rows).tolist()  # the one host sync of a decision step
        out = []
        for (name, lay), (score, div, grad_rel, _target) in zip(observed.items(), values, strict=True):
            self.last_scores[name] = score
            out.append(
                Observation(
                    name,
                    lay.r,
                    lay.r_min,
                    lay.r_max,
                    lay.in_features,
                    lay.out_features,
                    lay.obs_tokens,
                    score,
                    div,
                    grad_rel if math.isfinite(grad_rel) else 0.0,
                )
            )
        return out
