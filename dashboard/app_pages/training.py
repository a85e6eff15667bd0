"""Transfer learning: a new head on a pretrained backbone (feature extraction or fine-tuning) next to small
CNNs trained from scratch, with live curves, test metrics, what changed in the heatmaps, export and import."""

import pandas as pd
import streamlit as st

from core import training
from dashboard import cache, charts, dataset_cache, jobs, widgets

JOB, RUNS, CUSTOM = "training_job", "training_runs", "custom_model"
LR = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]

st.title("Transfer learning")
st.caption(
    "Teach a pretrained backbone new classes: train only a new head on frozen features (feature extraction, "
    "seconds on a CPU) or unfreeze its last stages too (fine-tuning), and compare with small CNNs trained from "
    "scratch on the same split. Everything runs on this machine."
)

choice = widgets.model_picker()
spec = cache.spec(choice.name)
runs: list[jobs.TrainedRun] = st.session_state.setdefault(RUNS, [])

# ---------------------------------------------------------------------------------------------
# Dataset

data, _ = widgets.dataset_picker(key="tr", default_limit=500, min_limit=30)
st.caption(f"**{data.name}**: {len(data)} images in {len(data.classes)} classes ({', '.join(data.classes[:12])}"
           f"{', …' if len(data.classes) > 12 else ''}).")
widgets.dataset_notes(data)

# ---------------------------------------------------------------------------------------------
# Strategy and settings

strategy = st.radio("Strategy", list(training.STRATEGIES), format_func=lambda s: training.STRATEGIES[s].title,
                    horizontal=True, key="tr_strategy")
pretrained_start = training.STRATEGIES[strategy].pretrained
if pretrained_start:
    st.caption(f"Starts from **{spec.title}**{'' if choice.pretrained else ' with RANDOM weights'} (sidebar).")
else:
    st.caption("Trained from scratch: the sidebar's backbone is not used.")

h1, h2, h3, h4, h5 = st.columns(5)
head = h1.selectbox("Head", training.HEADS, key="tr_head", disabled=not pretrained_start,
                    format_func=lambda h: {"linear": "Linear", "mlp": "MLP (hidden layer, dropout)"}[h])
hidden = h2.number_input("MLP hidden units", 16, 4096, 256, step=16, key="tr_hidden",
                         disabled=not pretrained_start or head != "mlp")
dropout = h3.slider("MLP dropout", 0.0, 0.8, 0.2, 0.05, key="tr_dropout", disabled=not pretrained_start or head != "mlp")
all_stages = dataset_cache.training_summary(choice.name, choice.device, choice.pretrained, "fine-tune", None,
                                    len(data.classes), "linear", 256) if pretrained_start else None
stage_count = len(all_stages.groups) - 1 if all_stages else 0
unfreeze_options = [*range(stage_count + 1), "all"] if stage_count else [0, "all"]
unfreeze = h4.select_slider("Unfreeze the last N stages", unfreeze_options, value=unfreeze_options[1],
                            key=f"tr_unfreeze_{choice.name}", disabled=strategy != "fine-tune")
own = spec.input_size[0]
sizes = [own] if spec.fixed_size and pretrained_start else sorted({own, 160, 128, 112, 96, 64}, reverse=True)
if not pretrained_start:
    sizes = [128, 96, 64, 32]
default_size = 112 if 112 in sizes else (64 if 64 in sizes else sizes[0])
size = h5.selectbox("Image size (px)", sizes, index=sizes.index(default_size), key=f"tr_size_{choice.name if pretrained_start else 'scratch'}",
                    help="Images are resized whole to this square. Smaller is much faster on a CPU.")

with st.expander("Optimiser and schedule"):
    o1, o2, o3, o4 = st.columns(4)
    optimizer = o1.selectbox("Optimiser", training.OPTIMIZERS, index=1, key="tr_optimizer",
                             format_func={"sgd": "SGD with momentum 0.9", "adam": "Adam", "adamw": "AdamW"}.get)
    lr_head = o2.select_slider("Learning rate: head" if pretrained_start else "Learning rate", LR, value=3e-3,
                               key="tr_lr_head", format_func=lambda v: f"{v:g}")
    lr_backbone = o3.select_slider("Learning rate: backbone", [0.0, *LR[:6]], value=1e-4, key="tr_lr_backbone",
                                   format_func=lambda v: f"{v:g}", disabled=strategy != "fine-tune")
    weight_decay = o4.select_slider("Weight decay", [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 5e-2], value=0.0,
                                    key="tr_weight_decay", format_func=lambda v: f"{v:g}")
    o5, o6, o7, o8, o9 = st.columns(5)
    batch_size = o5.selectbox("Batch size", [8, 16, 32, 64, 128], index=2, key="tr_batch")
    epochs = o6.number_input("Epochs", 1, 200, 10, key="tr_epochs")
    patience = o7.number_input("Early stopping: patience (0 = off)", 0, 50, 0, key="tr_patience",
                               help="Stop after this many epochs without a lower validation loss; the best epoch is kept.")
    clip = o8.number_input("Clip gradient norm (0 = off)", 0.0, 100.0, 0.0, 0.5, key="tr_clip")
    seed = o9.number_input("Seed", 0, 2**31 - 1, 0, key="tr_seed", help="Split, head initialisation, shuffling.")

with st.expander("Split and augmentation"):
    s1, s2, s3 = st.columns(3)
    train_fraction = s1.slider("Training share", 0.4, 0.9, 0.7, 0.05, key="tr_train_fraction")
    val_fraction = s2.slider("Validation share", 0.05, 0.3, 0.15, 0.05, key="tr_val_fraction")
    s3.metric("Test share", f"{max(0.0, 1 - train_fraction - val_fraction):.0%}")
    a1, a2 = st.columns(2)
    crop = a1.checkbox("Random resized crop", key="tr_crop", disabled=strategy == "feature-extraction")
    flip = a2.checkbox("Horizontal flip", key="tr_flip", disabled=strategy == "feature-extraction")
    if strategy == "feature-extraction":
        st.caption("Feature extraction computes the frozen features once, from the images as they are: that is what "
                   "makes it fast, and why augmentation applies to fine-tuning and the baselines only.")

config = training.TrainConfig(
    strategy=strategy, head=head, hidden=int(hidden), dropout=float(dropout),
    unfreeze_stages=None if unfreeze == "all" else int(unfreeze), optimizer=optimizer, lr_head=float(lr_head),
    lr_backbone=float(lr_backbone), weight_decay=float(weight_decay), batch_size=int(batch_size), epochs=int(epochs),
    random_crop=bool(crop), flip=bool(flip), clip_norm=float(clip) or None, seed=int(seed),
    train_fraction=float(train_fraction), val_fraction=float(val_fraction), patience=int(patience) or None,
    image_size=int(size),
).check()

# ---------------------------------------------------------------------------------------------
# What trains

summary = dataset_cache.training_summary(choice.name, choice.device, choice.pretrained, strategy, config.unfreeze_stages,
                                 len(data.classes), head, int(hidden))
st.subheader("What trains and what stays frozen")
m1, m2, m3 = st.columns(3)
m1.metric("Trainable parameters", f"{summary.trainable:,}")
m2.metric("Frozen parameters", f"{summary.frozen:,}")
m3.metric("Total", f"{summary.total:,}", help=f"{summary.trainable / summary.total:.1%} of them train")
m3.caption(f"{summary.trainable / summary.total:.1%} trainable")  # a share, not a change: no delta arrow
st.dataframe(
    pd.DataFrame({
        "group": [g.name for g in summary.groups],
        "modules": [", ".join(g.modules) for g in summary.groups],
        "parameters": [g.params for g in summary.groups],
        "status": ["trains" if g.trainable else "frozen" for g in summary.groups],
    }),
    hide_index=True, width="stretch", height=min(38 + 35 * len(summary.groups), 360),
)

# ---------------------------------------------------------------------------------------------
# Training (a process of its own, core.processes; its reports polled by a fragment)

job: jobs.TrainingJob | None = st.session_state.get(JOB)
running = job is not None and not job.done
if st.button("Train", type="primary", key="tr_start", disabled=running):
    source = (choice.name, choice.device, choice.pretrained) if pretrained_start else None
    job = st.session_state[JOB] = jobs.training_start(source, choice.device, data, config, len(runs) + 1)
    running = True


def _epochs(job) -> None:
    """Under the progress bar: the last epoch's validation scores and the curves so far."""
    history = list(job.history)
    if history:
        last = history[-1]
        st.caption(f"Epoch {last.epoch}: validation loss {last.val_loss:.3f}, accuracy {last.val_accuracy:.1%}")
        st.plotly_chart(charts.curves(history), width="stretch", key="tr_live_curves")


if running:
    widgets.job_progress(job, "Training", key="tr_stop", stop_label="Stop (keep the best epoch so far)",
                         stopping="Stopping after the current batch; the best epoch so far is kept…",
                         stop_help="Stops after the current batch; the weights of the best epoch so far are kept.",
                         details=_epochs)
elif job is not None:  # finished since the last run
    del st.session_state[JOB]
    if widgets.job_ended(job):
        runs.append(job.result)
        st.session_state["tr_run"] = job.result.id
        ended = job.result.result.ended
        if ended != "completed":
            how = {"stopped": "was stopped", "early stopping": "stopped early (the validation loss stopped falling)",
                   "diverged": "diverged (the loss became NaN or infinite: lower the learning rate)"}[ended]
            st.info(f"Run #{job.result.number} {how}; the weights of epoch {job.result.result.best_epoch} "
                    "(lowest validation loss) were kept.")

# ---------------------------------------------------------------------------------------------
# Results of the session


def _million(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


if runs:
    st.header("Results of this session")
    st.dataframe(
        pd.DataFrame([{
            "run": f"#{r.number}",
            "strategy": r.result.strategy.name,
            "backbone": r.result.backbone,
            "dataset": f"{r.result.dataset} ({len(r.dataset)})",
            "test accuracy": r.result.accuracy,
            "macro precision": r.result.macro_precision,
            "macro recall": r.result.macro_recall,
            "macro F1": r.result.macro_f1,
            "epochs (kept)": f"{len(r.result.history)} ({r.result.best_epoch})",
            "ended": r.result.ended,
            "training time (s)": r.result.seconds,
            "trainable params": _million(r.result.trainable_params),
            "total params": _million(r.result.total_params),
        } for r in runs]),
        hide_index=True, width="stretch", key="tr_results",
        column_config={c: st.column_config.NumberColumn(format="%.3f")
                       for c in ("test accuracy", "macro precision", "macro recall", "macro F1")}
        | {"training time (s)": st.column_config.NumberColumn(format="%.1f")},
    )
    by_id = {r.id: r for r in runs}
    if st.session_state.get("tr_run") not in by_id:
        st.session_state["tr_run"] = runs[-1].id
    run = by_id[st.selectbox("Run", list(by_id), format_func=lambda i: by_id[i].label, key="tr_run")]
    result = run.result
    st.caption(
        f"{result.strategy.title}. Split: {len(result.split.train)} training, {len(result.split.val)} validation, "
        f"{len(result.split.test)} test images. Optimiser groups: "
        + ", ".join(f"{g.name} lr {g.lr:g} ({_million(g.params)} params)" for g in result.groups)
        + (f". Frozen features {result.feature_seconds:.1f} s" if result.config.strategy == "feature-extraction" else "")
        + f". Epochs {result.train_seconds:.1f} s."
    )
    st.plotly_chart(charts.curves(result.history, best=result.best_epoch), width="stretch", key="tr_curves")

    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader("Confusion matrix (test set)")
        st.plotly_chart(charts.confusion(result.test.confusion, result.classes), width="stretch",
                        key="tr_confusion")
    with right:
        st.subheader("Per class")
        charts.per_class_table(result.test.per_class, key="tr_per_class")

    st.subheader("Before and after: where the model looks")
    rows = [int(i) for i in result.split.test[:60]]
    index = st.selectbox(
        "Test image", rows, key=f"tr_image_{run.id}",
        format_func=lambda i: f"{run.dataset.files[i]} (true: {result.classes[run.dataset.labels[i]]})",
    )
    peers = [r for r in runs if r.dataset.content_hash == run.dataset.content_hash]
    shown = st.multiselect("Runs to show", [r.id for r in peers], default=[run.id], key=f"tr_peers_{run.id}",
                           format_func=lambda i: by_id[i].label)
    panels = []
    if run.source is not None:
        (before,) = dataset_cache.dataset_cams(*run.source, run.dataset, index, (None,))
        panels.append((before, f"ImageNet head of {cache.spec(run.source[0]).title}: “{before.label}”"))
    for other in (by_id[i] for i in shown):
        after = dataset_cache.training_cam(other, index)
        panels.append((after, f"#{other.number} {other.result.strategy.name}: “{after.label}”"))
    picture = run.dataset.images[index]
    for column, (cam, caption) in zip(st.columns(max(len(panels), 4)), panels, strict=False):
        column.image(cam.overlay(picture), caption=caption, width="stretch")

    st.subheader("Export and re-use")
    json_file, weights_file = dataset_cache.checkpoint_files(run)
    e1, e2, e3 = st.columns(3)
    stem = f"{result.model.spec.name}_{result.dataset}_{result.config.strategy}"
    e1.download_button("Download model.json", json_file, file_name="model.json", mime="application/json",
                       key="tr_download_json", on_click="ignore")
    e2.download_button("Download model.safetensors", weights_file, file_name="model.safetensors",
                       mime="application/octet-stream", key="tr_download_weights", on_click="ignore",
                       help=f"Weights of {stem}; keep both files together (python -m core can load the folder).")
    if e3.button("Use in Explain", key="tr_use", help="Predict and explain your own images with this model."):
        st.session_state[CUSTOM] = result.model
        st.success(f"{result.model.spec.title} is ready on the Explain page: tick “Use my trained model” there.")
elif not running:
    st.info("Choose a dataset and a strategy, then press Train. Every run of this session is listed here.")

# ---------------------------------------------------------------------------------------------
# Import

with st.expander("Import a trained model (model.json + model.safetensors)"):
    files = st.file_uploader("Both files of an export", type=["json", "safetensors"], accept_multiple_files=True,
                             key="tr_import", max_upload_size=widgets.WEIGHTS_MB)
    by_suffix = {f.name.rsplit(".", 1)[-1].lower(): f for f in files or []}
    if {"json", "safetensors"} <= set(by_suffix):
        document, weights = by_suffix["json"].getvalue(), by_suffix["safetensors"].getvalue()
        loaded = dataset_cache.imported(cache.digest(document), cache.digest(weights), document, weights)
        st.success(f"{loaded.spec.title}: {len(loaded.categories)} classes ({', '.join(loaded.categories[:10])}"
                   f"{', …' if len(loaded.categories) > 10 else ''}), {loaded.params:,} parameters, "
                   f"{loaded.spec.input_size[0]} px.")
        if st.button("Use in Explain", key="tr_use_imported"):
            st.session_state[CUSTOM] = loaded
            st.success("Ready on the Explain page: tick “Use my trained model” there.")
    elif files:
        st.info("Add both files: model.json and model.safetensors.")

custom = st.session_state.get(CUSTOM)
if custom is not None:
    st.caption(f"In use on the Explain page: {custom.spec.title}.")
