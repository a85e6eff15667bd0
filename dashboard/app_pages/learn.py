"""Learn: how a CNN works, one idea at a time, on the current image and backbone."""

from fractions import Fraction

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.convolution import KERNELS, output_size, pool
from dashboard import cache, widgets

CUSTOM = "custom"
ORANGE, BLUE = "#d9480f", "#1c7ed6"


def _hw(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def _count(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count >= 1e5 else f"{count:,}"


def _tex_int(value: int) -> str:
    """An integer with thousands separators that KaTeX does not space out."""
    return f"{value:,}".replace(",", "{,}")


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _matrix(rows, fmt=_number) -> str:
    return r"\begin{bmatrix}" + r" \\ ".join(" & ".join(fmt(v) for v in row) for row in rows) + r"\end{bmatrix}"


def _kernel_latex(weights, scale: float) -> str:
    if scale == 1.0:
        return _matrix(weights)
    fraction = Fraction(scale).limit_denominator(100)
    return rf"\tfrac{{{fraction.numerator}}}{{{fraction.denominator}}}" + _matrix(weights / scale)


def _chart(figure: go.Figure, height: int, key: str, **layout) -> None:
    figure.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), **layout)
    st.plotly_chart(figure, width="stretch", key=key)


# ---------------------------------------------------------------------------------------------


def convolution(choice: widgets.Choice, picked: widgets.Picked) -> None:
    st.markdown(
        "A convolution slides a small grid of numbers, the **kernel**, over the image. At every position it "
        "multiplies the 3×3 pixels under the kernel by the kernel's weights and adds up the nine products: "
        "that sum is one pixel of the output. The same nine weights are used everywhere, so the layer finds the "
        "same pattern wherever it is in the image."
    )
    st.latex(r"\text{out}(i, j) = \sum_{u=-1}^{1} \sum_{v=-1}^{1} K(u, v)\; I(i + u,\; j + v)")
    st.caption(
        "Deep-learning libraries do not flip the kernel (strictly, this is a cross-correlation); "
        "since the weights are learned, it makes no difference."
    )
    names = [*KERNELS, CUSTOM]
    left, right = st.columns([1, 1])
    name = left.selectbox(
        "Kernel", names, index=names.index("edge"), key="learn_kernel",
        format_func=lambda n: "Custom (type your own)" if n == CUSTOM else KERNELS[n].title,
    )
    grey = right.toggle(
        "Greyscale", value=True, key="learn_grey", help="Off: each colour channel is filtered on its own."
    )
    if name == CUSTOM:
        st.caption("Your kernel: nine weights, row by row.")
        weights = []
        for row in range(3):
            columns = st.columns(3)
            weights.append(tuple(
                float(columns[col].number_input(
                    f"K[{row}, {col}]", value=1.0 if (row, col) == (1, 1) else 0.0, step=0.5, min_value=-50.0,
                    max_value=50.0, key=f"learn_k{row}{col}", label_visibility="collapsed",
                ))
                for col in range(3)
            ))
        kernel, scale = tuple(weights), 1.0
        note = "Weights adding up to 1 keep the brightness; adding up to 0 they find edges."
    else:
        chosen = KERNELS[name]
        kernel, scale, note = tuple(map(tuple, chosen.weights.tolist())), chosen.scale, chosen.note
    weights_array = np.asarray(kernel, dtype=np.float32)
    st.latex(r"K = " + _kernel_latex(weights_array, scale))
    st.markdown(note)
    shown = cache.lesson_picture(choice.name, picked.key, picked.data, grey)
    result = cache.convolved(choice.name, picked.key, picked.data, kernel, grey)
    a, b = st.columns(2)
    a.image(
        shown, caption=f"Input: {_hw(shown.shape[:2])}, what {cache.spec(choice.name).title} sees", width="stretch"
    )
    b.image(result, caption="Output, same size (zero padding of 1 pixel, stride 1)", width="stretch")
    if abs(float(weights_array.sum())) < 1e-3:
        st.caption(
            "This kernel's weights add up to 0, so the output shows how strong the change is (white: strongest). "
            "The light frame is the zero padding: next to the black border every pixel looks like an edge."
        )

    pixel = cache.worked_pixel(choice.name, picked.key, picked.data, kernel)
    st.markdown(
        f"**One output pixel, worked out** (the centre pixel, row {pixel.at[0]}, column {pixel.at[1]}, grey values):"
    )
    st.latex(
        _matrix(pixel.patch) + r"\odot" + _matrix(pixel.weights, lambda v: f"{v:.3g}")
        + rf"\;\xrightarrow{{\text{{sum}}}}\; {pixel.value:.1f}"
    )
    filters = cache.first_conv_filters(choice.name, choice.device, choice.pretrained)
    st.markdown(
        f"In a CNN nobody chooses the weights: training learns them. The first layer of "
        f"{cache.spec(choice.name).title}, `{filters.layer}`, has **{filters.count} kernels** of "
        f"{filters.kernel_size[0]}×{filters.kernel_size[1]}×3 (one 2-D kernel per colour channel, summed). "
        "Each tile below is one of them, drawn as colours: light-dark pairs are edge detectors, flat tiles "
        "respond to one colour."
    )
    st.image(filters.grid, caption=f"The {filters.count} learned kernels of {filters.layer}, as colours", width=420)


def padding_and_stride(choice: widgets.Choice, picked: widgets.Picked) -> None:
    st.markdown(
        "A kernel of size **F** cannot be centred on the border pixels, so the output shrinks. **Padding P** adds "
        "P rows and columns of zeros around the input to make room. **Stride S** moves the kernel S pixels at a "
        "time, so the output has about 1/S as many rows and columns. For an input of N pixels:"
    )
    st.latex(r"O = \left\lfloor \frac{N + 2P - F}{S} \right\rfloor + 1")
    st.caption("With dilation D (gaps between the kernel's taps) F becomes D(F − 1) + 1.")
    spec = cache.spec(choice.name)
    c = st.columns(5)
    n = c[0].number_input("Input N", 1, 4096, spec.input_size[0], key="learn_n")
    f = c[1].number_input("Kernel F", 1, 15, 3, key="learn_f")
    p = c[2].number_input("Padding P", 0, 15, 1, key="learn_p")
    s = c[3].number_input("Stride S", 1, 8, 2, key="learn_s")
    d = c[4].number_input("Dilation D", 1, 8, 1, key="learn_d")
    span = d * (f - 1) + 1
    if n + 2 * p < span:
        st.warning(f"A kernel spanning {span} pixels does not fit in {n} + 2·{p} = {n + 2 * p} pixels: add padding.")
    else:
        out = output_size(n, kernel=f, padding=p, stride=s, dilation=d)
        shown_f = str(f) if d == 1 else f"{span}"
        st.latex(
            rf"O = \left\lfloor \frac{{{n} + 2 \cdot {p} - {shown_f}}}{{{s}}} \right\rfloor + 1 = "
            rf"\left\lfloor {(n + 2 * p - span) / s:g} \right\rfloor + 1 = \mathbf{{{out}}}"
        )

    st.subheader(f"Checked against every layer of {spec.title}")
    checks = cache.conv_checks(choice.name, choice.device, choice.pretrained, picked.key, picked.data)
    agree = sum(check.matches for check in checks)
    st.markdown(
        f"On this image the network gets a {_hw(checks[0].input_hw)} input. For each of its "
        f"**{len(checks)}** convolution and pooling layers, the formula's size and the size the layer really "
        f"produced: **{agree} of {len(checks)} agree**."
    )
    by_name = {check.layer: check for check in checks}
    layer = st.selectbox(
        "Work out one layer", list(by_name), key=f"learn_layer_{choice.name}",
        format_func=lambda n: f"{n} ({by_name[n].type} {by_name[n].kernel[0]}×{by_name[n].kernel[1]}, "
        f"stride {by_name[n].stride[0]})",
    )
    check = by_name[layer]
    for axis, label in ((0, "height"), (1, "width")):
        n_in, k, stride = check.input_hw[axis], check.kernel[axis], check.stride[axis]
        k_span = check.dilation[axis] * (k - 1) + 1
        total = check.padding[axis]
        if check.same:
            st.latex(
                rf"\text{{{label}: }} P_{{\text{{total}}}} = \max\!\left(\left(\lceil {n_in}/{stride} \rceil - 1\right)"
                rf"\cdot {stride} + {k_span} - {n_in},\ 0\right) = {total},\quad "
                rf"O = \left\lfloor \frac{{{n_in} + {total} - {k_span}}}{{{stride}}} \right\rfloor + 1 = "
                rf"{check.predicted_hw[axis]} = \lceil {n_in}/{stride} \rceil"
            )
        else:
            st.latex(
                rf"\text{{{label}: }} O = \left\lfloor \frac{{{n_in} + 2 \cdot {_number(total / 2)} - {k_span}}}"
                rf"{{{stride}}} \right\rfloor + 1 = {check.predicted_hw[axis]}"
            )
    verdict = "✓ matches" if check.matches else "✗ differs from"
    st.markdown(f"Predicted **{_hw(check.predicted_hw)}**, {verdict} the measured **{_hw(check.output_hw)}**.")
    if any(c.same for c in checks):
        st.info(
            "Layers marked *same* come from TensorFlow ('SAME' padding, timm's `Conv2dSame`): they choose the "
            "padding at run time, P_total pixels split as P_total // 2 before and the rest after, so that the "
            "output is always ⌈N / S⌉. The formula still holds with 2P replaced by P_total."
        )
    st.dataframe(
        [
            {"layer": c.layer, "type": c.type, "F": _hw(c.kernel), "S": c.stride[0], "P": c.padding_text,
             "input": _hw(c.input_hw), "predicted": _hw(c.predicted_hw), "measured": _hw(c.output_hw),
             "agree": "✓" if c.matches else "✗"}
            for c in checks
        ],
        hide_index=True, width="stretch", height=300, key="learn_checks",
        column_config={
            "P": st.column_config.TextColumn(width="medium"), "agree": st.column_config.TextColumn(width="small")
        },
    )


def pooling(choice: widgets.Choice, picked: widgets.Picked) -> None:
    st.markdown(
        "Pooling shrinks a feature map by summarising each small window with one number: its **maximum** "
        "(max pooling: was the pattern there anywhere in the window?) or its **average**. It has no weights to "
        "learn. A k×k window moved k pixels at a time divides the size by k, by the formula of the previous step "
        "with F = S = k and P = 0."
    )
    st.latex(
        r"\text{max: } y_{ij} = \max_{0 \le u, v < k} x_{ki+u,\,kj+v} \qquad "
        r"\text{average: } y_{ij} = \frac{1}{k^2} \sum_{u=0}^{k-1} \sum_{v=0}^{k-1} x_{ki+u,\,kj+v}"
    )
    size = st.select_slider("Window k (and stride)", [2, 4, 8, 16], value=8, key="learn_pool_size")
    shown = cache.lesson_picture(choice.name, picked.key, picked.data)
    maxed = cache.pooled(choice.name, picked.key, picked.data, size, "max")
    averaged = cache.pooled(choice.name, picked.key, picked.data, size, "average")
    a, b, c = st.columns(3)
    a.image(shown, caption=f"Input {_hw(shown.shape[:2])}", width="stretch")
    for column, pooled, kind in ((b, maxed, "Max"), (c, averaged, "Average")):
        column.image(pooled.repeat(size, axis=0).repeat(size, axis=1), caption=f"{kind} pooling {size}×{size}: "
                     f"{_hw(pooled.shape[:2])}, drawn at the input's size", width="stretch")

    grey = cache.lesson_picture(choice.name, picked.key, picked.data, True)
    top, left = grey.shape[0] // 2 - 2, grey.shape[1] // 2 - 2
    patch = grey[top : top + 4, left : left + 4]
    st.markdown("**Worked out** on the 4×4 grey pixels at the centre, with k = 2:")
    st.latex(
        _matrix(patch) + r"\xrightarrow{\max}" + _matrix(pool(patch, 2, "max"))
        + r"\qquad" + _matrix(patch) + r"\xrightarrow{\text{average}}" + _matrix(pool(patch, 2, "average"))
    )
    st.caption("Averages are rounded to whole grey levels here.")

    checks = cache.conv_checks(choice.name, choice.device, choice.pretrained, picked.key, picked.data)
    title = cache.spec(choice.name).title
    pools = [c for c in checks if c.kind == "pool"]
    strided = [c for c in checks if c.kind == "conv" and max(c.stride) > 1]
    if pools:
        st.markdown(f"**In {title}:** " + "; ".join(
            f"`{c.layer}` is a {c.type} with a {_hw(c.kernel)} window, stride {c.stride[0]}, padding "
            f"{c.padding_text}: {_hw(c.input_hw)} → {_hw(c.output_hw)}" for c in pools) + ".")
    else:
        st.markdown(
            f"**In {title}:** no pooling layer inside the network. It halves the size with {len(strided)} "
            f"stride-2 convolutions instead (" + ", ".join(f"`{c.layer}`" for c in strided) + "), which learn how "
            "to summarise rather than always taking the maximum."
        )
    last = checks[-1]
    st.markdown(
        f"At the end, a **global average pool** turns each of the last layer's {last.channels:,} maps of "
        f"{_hw(last.output_hw)} into one number: the {last.channels:,} numbers are the image's feature vector."
    )


def receptive_field(choice: widgets.Choice, picked: widgets.Picked) -> None:
    st.markdown(
        "One unit of a feature map depends only on a patch of the input image: its **receptive field**. A 3×3 "
        "layer widens it by 2 units of the previous layer. Every stride-2 layer doubles the **jump** j, the "
        "number of input pixels between two neighbouring units, so later layers widen the field much faster."
    )
    st.latex(r"r_l = r_{l-1} + (F_l - 1)\, j_{l-1}, \qquad j_l = j_{l-1}\, S_l, \qquad r_0 = j_0 = 1")
    steps = cache.receptive_field(choice.name, choice.device, choice.pretrained)
    shown = cache.lesson_picture(choice.name, picked.key, picked.data)
    title = cache.spec(choice.name).title
    figure = go.Figure(go.Scatter(
        x=list(range(1, len(steps) + 1)), y=[s.rf for s in steps], mode="lines+markers", marker_color=ORANGE,
        customdata=[[s.layer, s.jump] for s in steps],
        hovertemplate="%{customdata[0]}: field %{y} px, jump %{customdata[1]} px<extra></extra>",
    ))
    figure.add_hline(y=shown.shape[0], line_dash="dot", annotation_text=f"image height ({shown.shape[0]} px)")
    _chart(figure, 320, "learn_rf_chart", title=f"{title}: receptive field after each convolution / pooling layer",
           xaxis_title="layer (in the order they run)", yaxis_title="receptive field (pixels)")
    names = [s.layer for s in steps]
    layer = st.select_slider("Layer", names, value=names[len(names) // 2], key=f"learn_rf_layer_{choice.name}")
    step = steps[names.index(layer)]
    left, right = st.columns([3, 2])
    left.image(
        cache.field_outline(choice.name, picked.key, picked.data, step.rf, step.jump),
        caption=f"The field of the centre unit of {layer}: {step.rf}×{step.rf} px (cut off at the border); "
        f"white ticks: neighbouring units, {step.jump} px apart",
        width="stretch",
    )
    right.metric("Receptive field", f"{step.rf} px")
    right.metric("Jump", f"{step.jump} px")
    right.markdown(
        "This is the **theoretical** field along the main path (1×1 shortcut convolutions left out): every "
        "pixel in it *can* change the unit. Most of the influence comes from the middle; the *effective* field "
        "is much smaller (Luo et al., 2016). A field larger than the image means the deepest units can use the "
        "whole picture. Networks with parallel branches (Inception) are read here as one chain, which overstates "
        "their field."
    )
    if cache.spec(choice.name).family == "transformer":
        st.info(
            f"{title} is a transformer: only its first layer, which cuts the image into patches, is a convolution. "
            "After that, self-attention lets every patch look at every other one, so from the first block on "
            "each unit's field is the whole image."
        )


def residual_connections(choice: widgets.Choice, picked: widgets.Picked) -> None:
    st.markdown(
        "A residual block does not replace its input: it **adds a correction** to it. The layers inside compute "
        "F(x) and the block outputs F(x) + x. If the best thing to do is nothing, the block only has to learn "
        "F(x) = 0. And in the backward pass the gradient flows through the + x unchanged, which is why networks "
        "with a hundred layers still train."
    )
    st.latex(r"y = F(x) + x \qquad\Rightarrow\qquad \frac{\partial y}{\partial x} = \frac{\partial F}{\partial x} + I")
    result = cache.residuals(choice.name, choice.device, choice.pretrained, picked.key, picked.data)
    title = cache.spec(choice.name).title
    if not result.blocks:
        st.info(
            f"{title} has no residual blocks. Choose ResNet-18 or EfficientNet-Lite0 in the sidebar to measure them."
        )
        return
    st.markdown(
        f"**{title}** has {len(result.blocks)} blocks that add their input back"
        + (f", and {len(result.plain)} that do not ({', '.join(f'`{b}`' for b in result.plain)}): those change "
           "the size (stride 2) or the number of channels, so x cannot be added as it is." if result.plain else ".")
        + (" ResNet adds x through a 1×1 convolution (`downsample`) where the shape changes, and applies a ReLU "
           "after the sum." if any(b.shortcut != "identity" for b in result.blocks) else "")
    )
    figure = go.Figure(go.Bar(
        x=[b.block for b in result.blocks], y=[b.ratio for b in result.blocks], marker_color=BLUE,
        text=[f"{b.ratio:.2f}" for b in result.blocks], textposition="auto",
        hovertemplate="%{x}: ‖F(x)‖ / ‖x‖ = %{y:.3f}<extra></extra>",
    ))
    _chart(figure, 300, "learn_residual_chart", title="How big is the correction? ‖F(x)‖ / ‖x‖ for this image",
           yaxis_title="‖F(x)‖ / ‖x‖")
    by_name = {b.block: b for b in result.blocks}
    name = st.selectbox("Block", list(by_name), key=f"learn_block_{choice.name}")
    block = by_name[name]
    peak = max(float(m.max()) for m in (block.shortcut_map, block.branch_map, block.sum_map)) or 1.0
    columns = st.columns(3)
    for column, array, label in (
        (columns[0], block.shortcut_map, f"x ({'identity' if block.shortcut == 'identity' else block.shortcut}), "
                                         f"‖x‖ = {block.shortcut_norm:.1f}"),
        (columns[1], block.branch_map, f"F(x), ‖F(x)‖ = {block.branch_norm:.1f}"),
        (columns[2], block.sum_map, "F(x) + x"),
    ):
        column.image(array / peak, caption=label, width="stretch", clamp=True)
    st.caption(
        "Mean absolute value over the channels at each position, the three on one brightness scale. "
        "A ratio below 1 means the block nudges x rather than rewriting it."
    )


def pretrained_features(choice: widgets.Choice, picked: widgets.Picked) -> None:
    st.markdown(
        "A pretrained network has already learned, from 1.2 million ImageNet photos, a stack of pattern "
        "detectors. Each layer's output is a set of **feature maps**, one per channel: bright where that "
        "channel's pattern appears. Early layers respond to edges and colours, middle layers to textures and "
        "parts, the last ones to object parts and whole objects, on coarser and coarser grids. These features are "
        "useful for images the network never saw, which is what transfer learning relies on."
    )
    st.latex(r"A^k = \mathrm{ReLU}\Big(\sum_{c} W^k_c \star X_c + b_k\Big)")
    st.caption(
        "Channel k of a layer: one learned kernel per input channel c, slid over the previous layer's maps X_c and "
        "summed, then a ReLU (most networks also normalise in between). Stacking such layers builds complex "
        "patterns out of simple ones."
    )
    layers = cache.depth_layers(choice.name, choice.device, choice.pretrained, 4)
    random = st.toggle("Compare with the same network with random weights", key="learn_random",
                       help="Untrained, the same architecture only passes on blurred versions of the image.")
    rows = [(choice.pretrained, "pretrained" if choice.pretrained else "random weights")]
    if random and choice.pretrained:
        rows.append((False, "random weights"))
    for pretrained, label in rows:
        st.markdown(f"**{cache.spec(choice.name).title}, {label}**: the 9 most active channels at 4 depths")
        for column, layer in zip(st.columns(len(layers)), layers):
            maps = cache.feature_maps(choice.name, choice.device, pretrained, picked.key, picked.data, layer, 9)
            column.image(
                maps.grid, caption=f"{layer}: {maps.map_shape[0]} maps of {maps.map_shape[1]}×{maps.map_shape[2]}",
                width="stretch",
            )
    st.caption("Each map is scaled to its own range (white: that channel's maximum). Shallow to deep, left to right.")


def transfer_learning(choice: widgets.Choice, picked: widgets.Picked) -> None:
    st.markdown(
        "To recognise your own classes you keep the pretrained network and replace its last layer, the "
        "**head**, with a new one that has one output per class. Then you choose how much of the rest to train:\n"
        "- **Feature extraction**: freeze everything except the new head. Fast, needs few images, cannot overfit "
        "much. Best when you have little data (tens to hundreds of images per class) that looks like ImageNet "
        "photos.\n"
        "- **Fine-tuning the last stage** (or more): also train the deepest layers, with a small learning rate, "
        "so the high-level features adapt. Better with more data (hundreds to thousands per class) or images "
        "unlike ImageNet (X-rays, drawings, satellite views); slower, and it can overfit a small dataset.\n"
        "- **Fine-tuning everything** needs the most data and time; the early layers' edges and colours rarely "
        "need to change."
    )
    classes = st.number_input("Classes in your dataset (K)", 2, 10_000, 10, key="learn_classes")
    plan = cache.transfer_plans(choice.name, choice.device, choice.pretrained, classes)
    title = cache.spec(choice.name).title
    st.latex(
        rf"\text{{new head: }} (d + 1)\,K = ({_tex_int(plan.features)} + 1) \times {_tex_int(plan.classes)} = "
        rf"{_tex_int(plan.new_head)} \text{{ parameters}}"
    )
    st.caption(f"d = {plan.features:,}: the length of {title}'s feature vector, the input of `{plan.head}`.")
    st.dataframe(
        [
            {"strategy": p.name, "trainable": f"{p.trainable:,}", "frozen": f"{p.frozen:,}",
             "trainable share": f"{p.trainable / p.total:.1%}", "what trains": ", ".join(p.modules)}
            for p in plan.plans
        ],
        hide_index=True, width="stretch", key="learn_plans",
    )
    figure = go.Figure()
    for values, label, color in (([p.frozen for p in plan.plans], "frozen", "#adb5bd"),
                                 ([p.trainable for p in plan.plans], "trainable", ORANGE)):
        figure.add_bar(y=[p.name for p in plan.plans], x=values, name=label, orientation="h", marker_color=color,
                       text=[_count(v) for v in values], textposition="auto")
    _chart(figure, 260, "learn_transfer_chart", barmode="stack", title=f"{title}: parameters per strategy",
           xaxis_title="parameters", yaxis=dict(autorange="reversed"))
    st.caption(f"Counted on the loaded {title}, with the stages the Transfer learning page unfreezes: its last stage "
               f"ends at `{plan.last_stage}`.")


def _blocky(array: np.ndarray, side: int) -> np.ndarray:
    """A small map enlarged with square pixels (the browser would blur it), about `side` pixels high."""
    factor = max(1, side // array.shape[0])
    return array.repeat(factor, axis=0).repeat(factor, axis=1)


def gradcam(choice: widgets.Choice, picked: widgets.Picked) -> None:
    st.markdown(
        "Grad-CAM asks: which channels of the last feature layer push the score of class c up, and where are "
        "those channels active? It takes the gradient of the class score y^c with respect to each feature map "
        "A^k and averages it over the map's Z positions: that is the channel's weight α. The map is the "
        "weighted sum of the feature maps, keeping only the positive part."
    )
    st.latex(r"\alpha_k^c = \frac{1}{Z} \sum_i \sum_j \frac{\partial y^c}{\partial A^k_{ij}}")
    st.latex(r"L^c_{\text{Grad-CAM}} = \mathrm{ReLU}\!\left(\sum_k \alpha_k^c A^k\right)")
    preds = cache.top_k(choice.name, choice.device, choice.pretrained, picked.key, picked.data)
    model = cache.model(choice.name, choice.device, choice.pretrained)
    target = widgets.class_picker(model.categories, preds[0].index, key="learn_target")
    parts = cache.gradcam_parts(choice.name, choice.device, choice.pretrained, picked.key, picked.data, target, 8)
    h, w = parts.grid
    silent = [k for k in parts.largest if parts.means[k] == 0]
    st.markdown(
        f"Here: class c = **{parts.label}** ({parts.target}), layer `{parts.layer}` with "
        f"**{len(parts.weights):,} channels** k of {h}×{w}, so Z = {h * w}."
    )
    figure = go.Figure(go.Bar(
        x=[f"k={k}" for k in parts.largest], y=[float(parts.weights[k]) for k in parts.largest],
        marker_color=["#adb5bd" if parts.means[k] == 0 else ORANGE for k in parts.largest],
        text=[f"{parts.weights[k]:.4f}" for k in parts.largest], textposition="auto",
        customdata=[float(parts.means[k]) for k in parts.largest],
        hovertemplate="%{x}: α = %{y:.5f}, mean A = %{customdata:.3f}<extra></extra>",
    ))
    _chart(figure, 280, "learn_alpha_chart", title=f"The 8 largest weights α_k for “{parts.label}”",
           yaxis_title="α_k")
    if silent:
        st.caption(
            f"Grey: {len(silent)} of these channels are silent on this image (A^k = 0 everywhere), so however large "
            "their weight, they add nothing. A channel counts when its weight *and* its activation are large:"
        )
    st.markdown("**The 8 channels that add most to the map** (largest α_k × mean of A^k):")
    columns = st.columns(len(parts.channels))
    for column, k, tile, peak in zip(columns, parts.channels, parts.maps, parts.peaks, strict=True):
        column.image(_blocky(tile, 96), caption=f"A^{k}: α = {parts.weights[k]:.4f}, max {peak:.2f}", width="stretch")
    terms = " + ".join(rf"{parts.weights[k]:.4f}\,A^{{{k}}}" for k in parts.channels[:3])
    st.latex(rf"L = \mathrm{{ReLU}}\!\left({terms} + \dots\right)\quad(\text{{{len(parts.weights):,} terms}})")
    left, right = st.columns(2)
    left.image(_blocky(parts.coarse, 320), caption=f"The weighted sum after ReLU, at the layer's {h}×{w}",
               width="stretch")
    right.image(parts.overlay, caption=f"Scaled to [0, 1], resized to the image: Grad-CAM for “{parts.label}”",
                width="stretch")
    st.caption("The same map as on the Explain page: one forward and one backward pass, pytorch-grad-cam's maths.")


LESSONS = {
    "Convolution": convolution,
    "Padding & stride": padding_and_stride,
    "Pooling": pooling,
    "Receptive field": receptive_field,
    "Residual connections": residual_connections,
    "Pretrained features": pretrained_features,
    "Transfer learning": transfer_learning,
    "Grad-CAM": gradcam,
}

st.title("Learn")
st.caption("How a CNN sees, one idea at a time, worked out live on your image and the backbone in the sidebar.")
STEPS = tuple(LESSONS)  # the lessons in teaching order
step = st.segmented_control("Step", STEPS, default=STEPS[0], required=True, key="learn_step") or STEPS[0]
choice = widgets.model_picker()
with st.sidebar:
    picked = widgets.image_picker(key="learn_image")
if picked is None:
    st.info("Upload an image or take a photo in the sidebar to start, or pick a sample photo.")
    st.stop()
model = cache.model(choice.name, choice.device, choice.pretrained)
st.sidebar.image(cache.lesson_picture(choice.name, picked.key, picked.data), caption="What the network sees")
if not model.pretrained:
    st.warning(f"{model.spec.title} has random weights: shapes and sizes are real, learned features are not.")
st.header(step)
LESSONS[step](choice, picked)
