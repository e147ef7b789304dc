"""Classifier: the shared base of every learning strategy -- backbone, supervised loss, optimizer and schedule,
metrics and logging. Strategies override ``unlabeled_loss`` (see DESIGN.md) and nothing else if they can; every
subclass registers itself (``registered_strategies``), so a new strategy is one file plus one config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from bloodcls.data.interface import LoaderRequest, TrainingData, training_data
from bloodcls.data.sampling import ClassWeighting, class_weights
from bloodcls.errors import UserInputError
from bloodcls.inference import InferenceSettings, tta_probabilities
from bloodcls.models import create_backbone
from bloodcls.models.tiny_map_conv import use_matmul_for_tiny_maps
from bloodcls.strategies.backbones import backbone, frozen_copy, load_backbone_checkpoint
from bloodcls.strategies.ema import ema_decay_at, ema_update
from bloodcls.strategies.losses import classification_loss, warmup_cosine

Batch = dict[str, torch.Tensor]

# Every concrete strategy, by "module.ClassName"; filled by ``Classifier.__init_subclass__``.
_REGISTRY: dict[str, type[Classifier]] = {}


def registered_strategies() -> dict[str, type[Classifier]]:
    """Every strategy class defined so far (``bloodcls.strategies`` imports all its modules), by qualified name."""
    return dict(_REGISTRY)


@dataclass
class UnlabeledOutput:
    """What a strategy's unlabeled term returns: the (unweighted) loss, its weight, and statistics to log.
    A loss of several terms carries their weights itself (``weight`` 1); ``logged_weight`` is then the main term's
    ramped weight, what ``train/unsup_weight`` shows."""

    loss: torch.Tensor
    weight: float = 1.0
    stats: dict[str, float | torch.Tensor] = field(default_factory=dict)
    logged_weight: float | None = None


def _eval_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "balanced_acc": MulticlassAccuracy(num_classes, average="macro"),
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class Classifier(L.LightningModule):
    """Supervised classifier over any backbone ``create_backbone`` knows; base of all strategies.

    Args:
        num_classes: linked from ``data.num_classes`` by the CLI.
        class_names: linked from ``data.class_names``; stored in checkpoints for predictions and reports.
        backbone: timm or bloodcls model name (``resnet18``, ``efficientnet_b0``, ``bloodcls_cnn_small``...).
        pretrained: load published weights (needs the hub); ``pretrained_weights``: local file or URL instead.
        backbone_checkpoint: start from the backbone of a bloodcls checkpoint (e.g. contrastive pretraining);
            the classifier head is kept fresh when its shape differs.
        backbone_kwargs: extra constructor arguments of the network (e.g. ``{mode: patches, cell: gru}`` for
            ``bloodcls_rnn``), passed through ``create_backbone``.
        drop_rate: dropout before the classifier.
        loss: ``ce`` or ``focal``; ``label_smoothing``, ``focal_gamma`` as named.
        class_weighting: weight the loss by training-set class frequencies (``inverse``, ``sqrt_inverse``,
            ``effective``) -- an alternative to resampling.
        optimizer: injected optimizer factory (YAML ``class_path`` / ``init_args``).
        scheduler: injected LR scheduler factory; when ``None``, ``lr_schedule`` applies: ``cosine`` (per step,
            over the whole run, after ``warmup_epochs``) or ``constant``.
        normalize_mean, normalize_std: input normalisation; default from the backbone's pretrained config.
        channels_last: run the backbone in NHWC memory format (faster convolutions on CPU and GPU).
        compile: compile the backbone with ``torch.compile`` (inductor) when a trainer starts. Costs a one-off
            compile per run (about a minute on a 2-core CPU, less when inductor's cache under
            ``/tmp/torchinductor_$USER`` is warm); checkpoints are unchanged (no ``_orig_mod.`` keys) and
            ``embed()`` stays eager. ``bench/throughput.py`` (config ``c_compile``) shows what it buys.
        tiny_map_matmul: on a CPU, compute the weight gradients of convolutions with small outputs (at most
            8 x 8, e.g. a ResNet's last three stages at 64 px) as one matrix multiply, and their forward and input
            gradient too on 2 x 2 outputs, where oneDNN's kernels are slow: the same convolution, ResNet-18 steps
            ~1.6x faster at 64 px with bf16 on the Intel AMX machine (``bloodcls.models.tiny_map_conv``). Exports
            always use plain convolutions.
        ema_eval: keep an EMA copy of the network (``ema_net``; parameters and BN statistics averaged, decay
            ``ema_eval_decay`` with the warm-up of ``ema.ema_decay_at``) and validate / test / predict / export
            with it, as USB evaluates every algorithm. Off by default; it is in the checkpoint when on.
    """

    # Pretraining strategies (no classifier trained) are left out of label-efficiency comparisons.
    pretraining: ClassVar[bool] = False
    mean: torch.Tensor
    std: torch.Tensor
    class_weight: torch.Tensor

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if register:  # skeletons that are not strategies of their own pass register=False
            _REGISTRY[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def __init__(
        self,
        num_classes: int = 5,
        class_names: list[str] | None = None,
        backbone: str = "resnet18",
        pretrained: bool = False,
        pretrained_weights: str | None = None,
        backbone_checkpoint: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        drop_rate: float = 0.0,
        loss: Literal["ce", "focal"] = "ce",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        class_weighting: ClassWeighting = "none",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup_epochs: float = 0.0,
        normalize_mean: tuple[float, float, float] | None = None,
        normalize_std: tuple[float, float, float] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        tiny_map_matmul: bool = False,
        ema_eval: bool = False,
        ema_eval_decay: float = 0.999,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if class_names is not None and len(class_names) != num_classes:
            raise UserInputError(f"model.class_names has {len(class_names)} names but model.num_classes={num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise UserInputError(f"model.label_smoothing={label_smoothing} must be in [0, 1)")
        self.num_classes = num_classes
        self.loss_name = loss
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        self.class_weighting: ClassWeighting = class_weighting
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.net = create_backbone(
            backbone,
            num_classes,
            pretrained=pretrained,
            pretrained_weights=pretrained_weights,
            drop_rate=drop_rate,
            **(backbone_kwargs or {}),
        )
        if backbone_checkpoint is not None:
            load_backbone_checkpoint(self.net, backbone_checkpoint)
        cfg = getattr(self.net, "pretrained_cfg", {}) or {}
        mean = normalize_mean or cfg.get("mean", (0.485, 0.456, 0.406))
        std = normalize_std or cfg.get("std", (0.229, 0.224, 0.225))
        # Inputs arrive as uint8; scaling and normalising on the device keeps loader workers cheap.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("class_weight", torch.ones(num_classes))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.channels_last = channels_last
        self.compile_backbone = compile
        self._net_compiled = False
        if tiny_map_matmul:
            use_matmul_for_tiny_maps(self.net)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema_eval, self.ema_eval_decay = ema_eval, ema_eval_decay
        # Made after channels_last / tiny_map_matmul so it computes like the network; never compiled (eval only).
        self.ema_net: torch.nn.Module | None = frozen_copy(self.net) if ema_eval else None
        self._steps_averaged = 0  # the optimizer step the averages last followed (on_train_batch_end)
        self.val_metrics = _eval_metrics(num_classes, "val/")
        self.test_metrics = _eval_metrics(num_classes, "test/")
        # Losses averaged by torchmetrics (float sums synced across ranks): self.log(sync_dist=True) divides an
        # integer sample count by the world size on gloo, which is wrong for uneven DDP evaluation shards.
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        # Post-hoc settings (temperature, referral threshold, default TTA): not hyperparameters -- `bloodcls
        # calibrate` fits them after training -- so they travel in checkpoint["bloodcls"]["inference"].
        self.inference = InferenceSettings()
        # Other restored classifiers whose probabilities are averaged with this one's (``--ensemble``); a plain list,
        # not submodules: never in this model's state_dict or checkpoint.
        self.ensemble_members: list[Classifier] = []

    # ------------------------------------------------------------------ forward
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float; floats in [0, 1] are accepted too."""
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255.0
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def eval_network(self) -> torch.nn.Module:
        """The network validation, test, predict and export use: the EMA copy when ``ema_eval`` is on."""
        return self.ema_net if self.ema_net is not None else self.net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        net = self.net if self.training else self.eval_network()
        return net(self.preprocess(images))  # (B, K) logits

    def eval_probabilities(self, images: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities (B, K) as test, predict, export and the Python API give them: the evaluation network,
        test-time augmentation and temperature of ``self.inference``, averaged with ``ensemble_members``.
        ``logits``: this batch's plain forward, reused as the first (identity) view."""
        settings = self.inference
        probs = tta_probabilities(self.forward, images, settings.tta, settings.temperature, plain_logits=logits)
        for member in self.ensemble_members:  # each with its own normalisation, temperature and TTA
            probs = probs + member.eval_probabilities(images)
        return probs / (1 + len(self.ensemble_members))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features (B, D), for label propagation, contrastive heads and ``bloodcls embed``: of the
        trained network in training, of the evaluation network (EMA copy / teacher) otherwise, like ``forward``."""
        net = backbone(self.net if self.training else self.eval_network())
        return net.forward_head(net.forward_features(self.preprocess(images)), pre_logits=True)

    def configure_model(self) -> None:
        # Compiled here, not in __init__: strategies copy self.net in their constructors (Mean Teacher's EMA
        # teacher), and a copy of a compiled module would still call the original's forward. nn.Module.compile()
        # compiles in place (no OptimizedModule wrapper), so state-dict keys keep their names and checkpoints
        # load into eager models; forward_features / forward_head (embed) stay eager.
        if self.compile_backbone and not self._net_compiled:
            self.net.compile()
            self._net_compiled = True

    # ------------------------------------------------------------------ data
    def loader_request(self) -> LoaderRequest:
        """What this strategy's training batches carry (views, unlabeled share); supervised batches by default."""
        return LoaderRequest()

    def training_data(self) -> TrainingData:
        """The datamodule, through the only interface a strategy may use."""
        return training_data(self.trainer)

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        request = self.loader_request()
        # A plain supervised run may use any datamodule (or bare loaders); anything else needs TrainingData.
        if request == LoaderRequest() and self.class_weighting == "none":
            if not isinstance(getattr(self._trainer, "datamodule", None), TrainingData):
                return
        data = self.training_data()
        data.request_loaders(request)
        if self.class_weighting != "none":
            weights = class_weights(data.train_class_counts(), self.class_weighting)
            self.class_weight.copy_(torch.as_tensor(weights, dtype=torch.float32))

    # ------------------------------------------------------------------ losses
    def supervised_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.class_weight if self.class_weighting != "none" else None
        return classification_loss(logits, target, self.loss_name, weight, self.label_smoothing, self.focal_gamma)

    def unlabeled_loss(self, batch: Batch, batch_idx: int) -> UnlabeledOutput | None:
        """Semi-supervised strategies turn the unlabeled part of a batch into a loss here."""
        return None

    def progress_epochs(self) -> float:
        """Training progress in (fractional) epochs, for ramp-ups that should be smooth within an epoch."""
        trainer = self._trainer
        if trainer is None or not trainer.num_training_batches or trainer.num_training_batches == float("inf"):
            return float(self.current_epoch)
        return self.global_step / float(trainer.num_training_batches)

    # ------------------------------------------------------------------ steps
    def labeled_logits_and_unlabeled(
        self, labeled: Batch, unlabeled: Batch | None, batch_idx: int
    ) -> tuple[torch.Tensor, UnlabeledOutput | None]:
        """Logits of the labeled images and the unlabeled term; strategies that want one forward over labeled and
        unlabeled views (shared BatchNorm statistics, as FixMatch's and Mean Teacher's reference code) override it."""
        logits = self(labeled["image"])
        return logits, None if unlabeled is None else self.unlabeled_loss(unlabeled, batch_idx)

    def labeled_inputs(self, labeled: Batch) -> tuple[Batch, torch.Tensor]:
        """The labeled batch the network trains on and the supervised loss's target: the class indices, or (B, K)
        soft targets for a strategy that mixes images (``Supervised`` with mixup / CutMix)."""
        return labeled, labeled["label"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        labeled, target = self.labeled_inputs(batch["labeled"] if "labeled" in batch else batch)
        logits, out = self.labeled_logits_and_unlabeled(labeled, batch.get("unlabeled"), batch_idx)
        loss_sup = self.supervised_loss(logits, target)
        loss = loss_sup
        batch_size = labeled["label"].shape[0]
        self.log("train/loss_sup", loss_sup, batch_size=batch_size)
        if out is not None:
            loss = loss + out.weight * out.loss
            self.log("train/loss_unsup", out.loss, batch_size=batch_size)
            logged = out.weight if out.logged_weight is None else out.logged_weight
            self.log("train/unsup_weight", float(logged), batch_size=batch_size)
            for name, value in out.stats.items():
                self.log(f"train/{name}", value, batch_size=batch_size)
        with torch.no_grad():  # under mixup / CutMix: against the dominant class of each soft target
            hard = target.argmax(dim=1) if target.ndim == 2 else target
            acc = (logits.argmax(dim=1) == hard).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/acc", acc, prog_bar=True, batch_size=batch_size)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.val_loss.update(self.supervised_loss(logits, batch["label"]), weight=len(logits))
        # bloodcls validate scores what test would (--tta, --ensemble, temperature), so those are chosen on
        # validation; fit's validation stays one forward.
        scores = self.eval_probabilities(batch["image"], logits) if self._validating_a_checkpoint() else logits
        self.val_metrics.update(scores, batch["label"])
        # Metric objects: Lightning computes them at epoch end -- torchmetrics syncs their states over DDP ranks --
        # and resets them.
        self.log("val/loss", self.val_loss, batch_size=len(logits))
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=len(logits))

    # Whether validation scores eval_probabilities under bloodcls validate (so --tta / --ensemble apply to it).
    validates_with_eval_probabilities = True

    def _validating_a_checkpoint(self) -> bool:
        return self._trainer is not None and self._trainer.state.fn == "validate"

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["image"])
        probs = self.eval_probabilities(batch["image"], logits)
        self.test_metrics.update(probs, batch["label"])  # TTA changes decisions; temperature does not
        self.test_loss.update(self.supervised_loss(logits, batch["label"]), weight=len(logits))
        self.log("test/loss", self.test_loss, batch_size=len(logits))
        self.log_dict(self.test_metrics, batch_size=len(logits))
        # logits: the plain (untempered, un-augmented) forward, for the report's before / after calibration view
        return {"probs": probs, "logits": logits.float(), "label": batch["label"], "index": batch["index"]}

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        return {"probs": self.eval_probabilities(batch["image"]), "index": batch["index"]}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is not None:
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}
        if self.lr_schedule == "constant":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(1, int(self.trainer.max_epochs or 1))
        warmup = int(round(self.warmup_epochs * total / epochs))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_multiplier(total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def lr_multiplier(self, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
        """Per-step LR factor of the built-in ``cosine`` schedule: one cosine over the run (rounds may restart it)."""
        return lambda step: warmup_cosine(step, total_steps, warmup_steps)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Averages follow optimizer steps, not batches: with accumulate_grad_batches k the weights change once per
        # k batches, and folding the same weights in k times would make the decay d^k.
        if self.global_step != self._steps_averaged:
            self._steps_averaged = self.global_step
            self.after_optimizer_step()

    def after_optimizer_step(self) -> None:
        """Once per optimizer step, after it: update the weight averages (the EMA evaluation network)."""
        if self.ema_net is not None:  # parameters are identical on every rank (DDP); so are their averages
            ema_update(self.ema_net, self.net, ema_decay_at(self.global_step, self.ema_eval_decay), buffers=True)

    # ------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["bloodcls"] = {"class_names": self.class_names, "inference": self.inference.to_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.inference = InferenceSettings.from_dict(checkpoint.get("bloodcls", {}).get("inference"))

    def on_train_start(self) -> None:
        self._steps_averaged = self.global_step  # a resumed run starts from its checkpoint's step

    def on_fit_start(self) -> None:
        # Temperature and referral threshold were fitted to the weights of the checkpoint a fit may resume from;
        # training changes the weights, so they are dropped (CalibrateAfterFit fits new ones at the end).
        self.inference = InferenceSettings()
