"""Pictures: computation graphs drawn with Graphviz (``draw_graph(*roots)``, ``write_model_graph(model,
out)``) and a confusion matrix drawn with OpenCV (``write_confusion_matrix(matrix, out)``).

A graph is drawn from the records the engine keeps anyway: every non-leaf tensor's ``_ctx`` holds the op
(``ctx.fn.name``), its attributes, its input tensors and the nn.Modules that were running (``ctx.scope``).
Nothing here runs during training; drawing costs nothing until it is asked for.
"""

from __future__ import annotations

import contextlib
import html
import math
import numbers
import os
import pathlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import graphviz
import numpy as np

from microgradcnn._checks import check_int
from microgradcnn._files import write_bytes_atomic
from microgradcnn.tensor import Tensor

__all__ = [
    "FORMATS",
    "ComputationGraph",
    "GraphvizNotFoundError",
    "draw_graph",
    "write_confusion_matrix",
    "write_model_graph",
]

DEFAULT_MAX_NODES = 500
FORMATS = ("svg", "png", "pdf")  # what write_model_graph (and the CLI's `graph --format`) renders to

INSTALL_HINT = (
    "Rendering needs Graphviz's `dot` program, which was not found on PATH (the `graphviz` Python package "
    "alone is not enough). Install Graphviz: Debian/Ubuntu `sudo apt-get install graphviz`, macOS "
    "`brew install graphviz`, conda `conda install -c conda-forge graphviz`, then check with `dot -V`. "
    "The graph itself was built: its DOT text is in `.source`."
)


def _dot_attrs(attrs: Mapping[str, str]) -> str:
    """``key=value`` DOT attributes: HTML labels ``<...>`` as they are, everything else double-quoted."""
    return " ".join(f"{k}={v if v.startswith('<') else _quoted(v)}" for k, v in attrs.items())


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# Colours: ops warm, tensors cool/neutral, so the two kinds of node read apart without a legend.
# Node styles, formatted once as DOT attribute text (a later duplicate attribute, e.g. color, overrides).
_OP = _dot_attrs({"shape": "box", "style": "rounded,filled", "fillcolor": "#ffd8a8", "color": "#d9822b"})
_PARAM = _dot_attrs({"shape": "box", "style": "filled", "fillcolor": "#c9ecc9", "color": "#3f8f3f"})
_LEAF = _dot_attrs({"shape": "box", "style": "filled", "fillcolor": "#cfe2fa", "color": "#4a7fc1"})
_INPUT = _dot_attrs({"shape": "box", "style": "filled", "fillcolor": "#ececec", "color": "#8c8c8c"})
_INTERMEDIATE = _dot_attrs(
    {"shape": "box", "style": "filled", "fillcolor": "#ffffff", "color": "#b3b3b3", "fontsize": "10"}
)
_POINT = _dot_attrs({"shape": "point", "width": "0.08", "color": "#8c8c8c"})
_ROOT = _dot_attrs(
    {"shape": "box", "style": "filled", "fillcolor": "#fff1a8", "color": "#b89b00", "penwidth": "1.5"}
)
_NONFINITE = _dot_attrs({"color": "red", "fontcolor": "red", "penwidth": "2.5"})
_COLLAPSED = _dot_attrs(
    {"shape": "note", "style": "filled,dashed", "fillcolor": "#f5f5f5", "color": "#8c8c8c"}
)
_CLUSTER_FILLS = ("#f4f7fb", "#e8eef7", "#dde6f2")  # deeper modules a little darker
_COLLAPSED_EDGE = _dot_attrs({"style": "dashed", "color": "#8c8c8c"})
_CLUSTER = {"labeljust": "l", "style": "rounded,filled", "color": "#8ea2bd", "fontsize": "11", "margin": "10"}

_VANISHING = 1e-4  # gradient norms below this fraction of the largest drawn one are drawn as vanishing
_LARGE = 1e3  # gradient norms above this (absolute) are drawn as large
_MAX_ATTR_CHARS = 40
_PAIR_ATTRS = frozenset({"kernel_size", "stride", "padding", "dilation"})  # (h, w): one int when h == w


class GraphvizNotFoundError(RuntimeError):
    """Rendering needs Graphviz's ``dot`` executable and it is not installed (or not on PATH)."""


@contextlib.contextmanager
def _dot_required() -> Iterator[None]:
    """Turn graphviz's ExecutableNotFound into our error, which says how to install Graphviz."""
    try:
        yield
    except graphviz.ExecutableNotFound:
        raise GraphvizNotFoundError(INSTALL_HINT) from None


class ComputationGraph(graphviz.Digraph):
    """A ``graphviz.Digraph`` whose ``render``/``pipe`` say how to install Graphviz when ``dot`` is missing.

    Attributes:
        drawn_nodes: tensor and op nodes drawn (the collapse note not counted).
        omitted_nodes: tensor and op nodes left out beyond ``max_nodes``, summarised in one collapse note.
    """

    drawn_nodes: int = 0
    omitted_nodes: int = 0

    def pipe(self, *args: Any, **kwargs: Any) -> Any:
        """As ``graphviz.Digraph.pipe`` (e.g. ``pipe(format="png") -> bytes``).

        Raises:
            GraphvizNotFoundError: without the ``dot`` executable, saying how to install it.
        """
        with _dot_required():
            return super().pipe(*args, **kwargs)

    def render(self, *args: Any, **kwargs: Any) -> Any:
        """As ``graphviz.Digraph.render`` (writes ``<filename>.<format>``; returns its path).

        Raises:
            GraphvizNotFoundError: without the ``dot`` executable, saying how to install it.
        """
        with _dot_required():
            return super().render(*args, **kwargs)


class _HasParameters(Protocol):
    def named_parameters(self) -> Iterable[tuple[str, Tensor]]: ...


def draw_graph(
    *roots: Tensor,
    params: Mapping[str, Tensor] | _HasParameters | None = None,
    show_shapes: bool = True,
    show_grad: bool = False,
    show_attrs: bool = True,
    rankdir: str = "TB",
    max_nodes: int | None = DEFAULT_MAX_NODES,
) -> ComputationGraph:
    """Draw the graph that produced ``roots``: tensors and ops as nodes, edges along the data flow.

    Tensor nodes: parameters (green, with their dotted name), other leaves that require grad (blue), inputs
    and constants (grey), intermediates (small white boxes, or dots when ``show_shapes=False``) and the roots
    (yellow). Op nodes (orange, rounded) carry the registry name and, with ``show_attrs``, the attributes
    (``conv2d stride=1 padding=0``; arrays such as labels are summarised as ``int64[8]``). A node holding
    NaN or inf is drawn red (``color=red``); an op whose inputs are finite but whose output is not is red too,
    which points at where a NaN was born. Ops recorded inside a Module's forward sit in a cluster labelled
    with the module's dotted name (from ``params``' ``named_modules()``, else the class name), nested as the
    modules are.

    With ``show_grad``, tensors that hold ``.grad`` (leaves, and intermediates after ``retain_grad()``) show
    its norm, and edges get thicker with larger gradient norms (log scale); norms below 1e-4 of the largest
    drawn are grey and dashed (vanishing), above 1e3 dark red (large), non-finite ones red.

    Only about ``max_nodes`` nodes (tensors plus ops) are drawn, nearest the roots first; what lies beyond is
    one note saying how many nodes were left out. ``max_nodes=None`` draws everything.

    Args:
        roots: the tensors to draw the history of (e.g. the loss).
        params: names for tensors: a mapping such as ``dict(model.named_parameters())``, or a Module (its
            ``named_parameters()`` and ``named_modules()`` name parameters and clusters).
        show_shapes: show each tensor's shape and dtype.
        show_grad: show gradient norms and weigh the edges by them.
        show_attrs: show the ops' attributes.
        rankdir: Graphviz layout direction: ``"TB"`` (inputs on top), ``"LR"``, ``"BT"`` or ``"RL"``.
        max_nodes: the most nodes to draw, at least 1 (the roots are always drawn), or None for no limit.

    Returns:
        A ``ComputationGraph`` (a ``graphviz.Digraph``): ``.source`` is the DOT text, ``.pipe(format="svg")``
        and ``.render(...)`` render it through Graphviz's ``dot``.

    Raises:
        TypeError: a root is not a Tensor, or ``params`` is neither a mapping of tensors nor a Module.
        ValueError: no roots, an unknown ``rankdir``, or ``max_nodes`` < 1.

    >>> import microgradcnn as mg
    >>> x = mg.Tensor([1.0, 2.0], requires_grad=True)
    >>> g = draw_graph((x * x).sum(), params={"x": x})
    >>> g.drawn_nodes  # x, x * x, the sum; the ops mul and sum
    5
    >>> g.source.count("->")  # x twice into mul, mul -> x * x -> sum -> the sum
    5
    """
    if not roots:
        raise ValueError("draw_graph: give at least one root tensor, e.g. draw_graph(loss)")
    for i, root in enumerate(roots):
        if not isinstance(root, Tensor):
            raise TypeError(f"draw_graph: root {i} is a {type(root).__name__}, not a Tensor")
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"draw_graph: rankdir must be 'TB', 'LR', 'BT' or 'RL', got {rankdir!r}")
    if max_nodes is not None:
        max_nodes = check_int(max_nodes, "max_nodes", "draw_graph", minimum=1)
    names, module_names = _names(params)
    drawer = _Drawer(names, module_names, show_shapes, show_grad, show_attrs)
    return drawer.draw(roots, rankdir, math.inf if max_nodes is None else max_nodes)


class _Drawer:
    """One drawing: a breadth-first walk from the roots (a queue, no recursion), then DOT emission."""

    def __init__(
        self,
        names: dict[int, str],
        module_names: dict[int, str],
        show_shapes: bool,
        show_grad: bool,
        show_attrs: bool,
    ) -> None:
        self.names, self.module_names = names, module_names
        self.show_shapes, self.show_grad, self.show_attrs = show_shapes, show_grad, show_attrs
        # cluster key (ids of the scope's modules, outermost first) -> [(node id, attrs)], and its Module
        self.cluster_nodes: dict[tuple[int, ...], list[tuple[str, str]]] = {(): []}  # (node id, DOT attrs)
        self.cluster_module: dict[tuple[int, ...], Any] = {}
        self.scope_keys: dict[int, tuple[int, ...]] = {}  # id(ctx.scope tuple) -> cluster key (memo)
        self.edges: list[tuple[str, str, Tensor]] = []  # (tail, head, tensor whose grad weighs it)
        self.side_leaves: set[int] = set()  # parameters drawn inside their module's cluster
        self.nonfinite: dict[int, bool] = {}  # id(tensor) -> holds NaN/inf (memo: each array scanned once)

    # ---- the walk ---------------------------------------------------------------------------------------
    def draw(self, roots: tuple[Tensor, ...], rankdir: str, max_nodes: float) -> ComputationGraph:
        node_of: dict[int, str] = {}  # id(tensor) -> node id, for every tensor reached (drawn or cut)
        queue: deque[Tensor] = deque()
        for root in roots:
            if id(root) not in node_of:
                node_of[id(root)] = f"t{len(node_of)}"
                queue.append(root)
        root_ids = {id(r) for r in roots}
        drawn: set[int] = set()
        cut: list[Tensor] = []  # reached but over budget: collapsed into one note
        consumers: dict[int, list[tuple[int, ...]]] = {}  # id(scalar constant) -> clusters of its consumers
        leaves: list[tuple[Tensor, str]] = []  # placed after the walk, once every module's cluster is known
        n_drawn, n_ops = 0, 0
        while queue:
            t = queue.popleft()
            ctx = t._ctx
            cost = 1 if ctx is None else 2  # a tensor, plus the op that made it
            if n_drawn + cost > max_nodes and id(t) not in root_ids:
                cut.append(t)
                continue
            n_drawn += cost
            drawn.add(id(t))
            tid = node_of[id(t)]
            if ctx is None:
                leaves.append((t, tid))
                continue
            key = self._cluster_key(ctx.scope)
            oid = f"o{n_ops}"
            n_ops += 1
            self.cluster_nodes[key].append((oid, self._op_attrs(ctx, t)))
            self.cluster_nodes[key].append((tid, self._tensor_attrs(t, id(t) in root_ids)))
            self.edges.append((oid, tid, t))
            for parent in ctx.parents:
                if id(parent) not in node_of:
                    node_of[id(parent)] = f"t{len(node_of)}"
                    queue.append(parent)
                if parent._ctx is None and not parent.requires_grad and parent.data.size == 1:
                    consumers.setdefault(id(parent), []).append(key)
                self.edges.append((node_of[id(parent)], oid, parent))
        # module dotted name -> its cluster, for placing parameters ("0.weight" goes to module "0")
        owners = {
            self.module_names[id(m)]: key
            for key, m in self.cluster_module.items()
            if id(m) in self.module_names
        }
        for t, tid in leaves:
            self.cluster_nodes[self._leaf_cluster(t, owners, consumers)].append(
                (tid, self._tensor_attrs(t, id(t) in root_ids))
            )
        return self._emit(rankdir, max_nodes, n_drawn, cut, drawn)

    def _cluster_key(self, scope: tuple[Any, ...]) -> tuple[int, ...]:
        """The cluster of an op recorded under ``scope``; all ops of one module call share the tuple."""
        key = self.scope_keys.get(id(scope))
        if key is None:
            key = tuple(id(m) for m in scope)
            for depth in range(1, len(scope) + 1):
                self.cluster_module.setdefault(key[:depth], scope[depth - 1])
                self.cluster_nodes.setdefault(key[:depth], [])
            self.scope_keys[id(scope)] = key
        return key

    def _leaf_cluster(
        self, t: Tensor, owners: dict[str, tuple[int, ...]], consumers: dict[int, list[tuple[int, ...]]]
    ) -> tuple[int, ...]:
        """A parameter sits in its module's cluster; a scalar constant in its consumers' common cluster."""
        name = self.names.get(id(t))
        if name is not None and t.requires_grad:
            key = owners.get(name.rpartition(".")[0])
            if key is not None:
                self.side_leaves.add(id(t))
                return key
        keys = consumers.get(id(t))
        if not keys:
            return ()
        common = keys[0]
        for key in keys[1:]:
            n = 0
            while n < min(len(common), len(key)) and common[n] == key[n]:
                n += 1
            common = common[:n]
        return common

    # ---- labels -----------------------------------------------------------------------------------------
    def _is_nonfinite(self, t: Tensor) -> bool:
        flag = self.nonfinite.get(id(t))
        if flag is None:
            data = t.data
            flag = data.dtype.kind in "fc" and not bool(np.isfinite(data).all())
            self.nonfinite[id(t)] = flag
        return flag

    def _tensor_attrs(self, t: Tensor, is_root: bool) -> str:
        name = self.names.get(id(t))
        lines: list[str] = []
        if t._ctx is None:
            if name is not None and t.requires_grad:
                style, title = _PARAM, name
            elif t.requires_grad:
                style, title = _LEAF, name or "leaf"
            elif t.data.size == 1 and name is None:
                style, title = _INPUT, f"const {_number(t.data)}"
            else:
                style, title = _INPUT, name or "input"
            lines.append(f"<B>{_esc(title)}</B>")
        else:
            style = _ROOT if is_root else _INTERMEDIATE
            value = f"= {_number(t.data)}" if t.data.size == 1 else ""
            if name is not None:
                lines.append(f"<B>{_esc(name)}</B> {value}".rstrip())
            elif value:
                lines.append(value)
        if self.show_shapes and not (t._ctx is None and name is None and not t.requires_grad and t.size == 1):
            lines.append(f"{_shape(t.shape)} {_dtype_name(t.data.dtype)}")
        if self.show_grad and t.grad is not None:
            lines.append(f"‖grad‖ = {_number(_norm(t.grad))}")
        bad = self._is_nonfinite(t)
        if bad:
            has_nan = bool(np.isnan(t.data).any())
            lines.append("<B>contains " + ("NaN" if has_nan else "inf") + "</B>")
        if is_root and not lines:
            lines.append("<B>output</B>")
        attrs = f"label=<{'<BR/>'.join(lines)}> {style}" if lines else _POINT
        return f"{attrs} {_NONFINITE}" if bad else attrs

    def _op_attrs(self, ctx: Any, out: Tensor) -> str:
        label = f"<B>{_esc(ctx.fn.name)}</B>"
        if self.show_attrs and ctx.attrs:
            label += '<BR/><FONT POINT-SIZE="10">' + "<BR/>".join(_attr_lines(ctx.attrs)) + "</FONT>"
        attrs = f"label=<{label}> {_OP}"
        # An op whose inputs are finite but whose output is not is where the NaN/inf was born.
        if self._is_nonfinite(out) and not any(self._is_nonfinite(p) for p in ctx.parents):
            attrs = f"{attrs} {_NONFINITE}"
        return attrs

    # ---- DOT --------------------------------------------------------------------------------------------
    # Lines are written straight into the Digraph's body: graphviz's node()/edge() re-quote every attribute
    # with regexes, which made a 20,000-node drawing take seconds. Our node ids are plain identifiers and
    # labels are escaped HTML, so _dot_attrs below is all the quoting needed.
    def _emit(
        self,
        rankdir: str,
        max_nodes: float,
        n_drawn: int,
        cut: list[Tensor],
        drawn: set[int],
    ) -> ComputationGraph:
        g = ComputationGraph(
            "computation_graph",
            graph_attr={
                "rankdir": rankdir,
                "bgcolor": "white",
                "fontname": "Helvetica",
                "nodesep": "0.3",
                "ranksep": "0.35",
            },
            node_attr={"fontname": "Helvetica", "fontsize": "11", "height": "0.3", "margin": "0.12,0.05"},
            edge_attr={"color": "#555555", "arrowsize": "0.7"},
        )
        body: list[str] = []
        # The walk found nodes from the roots backwards; emitting them reversed (inputs first) lets dot lay
        # sibling modules out left to right in the order they ran.
        body.extend(f"\t{node_id} [{a}]\n" for node_id, a in reversed(self.cluster_nodes[()]))
        self._emit_clusters(body)
        grad_style = self._grad_styler() if self.show_grad else None
        beside: dict[str, int] = {}  # op node -> parameters already placed beside it
        for tail, head, tensor in self.edges:
            if id(tensor) not in drawn:
                continue  # a cut tensor: its consumers get an edge from the collapse note below
            attrs = grad_style(tensor) if grad_style is not None else {}
            if tensor._ctx is not None:
                attrs["weight"] = "4"  # keep the data path (op -> tensor -> op) straight
            elif id(tensor) in self.side_leaves:
                # A parameter on its op's rank (minlen=0), so that a module's cluster spans only the ranks of
                # its ops and the clusters stack in one column. dot puts a same-rank edge's tail left of its
                # head, so every second parameter (the bias) is written head-first with dir=back: it lands
                # right of the op while its arrow still points into the op.
                attrs["minlen"] = "0"
                n = beside[head] = beside.get(head, 0) + 1
                if n % 2 == 0:
                    attrs["dir"] = "back"
                    tail, head = head, tail
            body.append(f"\t{tail} -> {head} [{_dot_attrs(attrs)}]\n" if attrs else f"\t{tail} -> {head}\n")
        omitted = _count_beyond(cut, drawn)
        if cut:
            label = f"<<B>… {omitted:,} more nodes</B><BR/>not drawn (max_nodes={int(max_nodes):,})>"
            body.append(f"\tcollapsed [label={label} {_COLLAPSED}]\n")
            cut_ids = {id(t) for t in cut}
            heads = dict.fromkeys(head for _, head, t in self.edges if id(t) in cut_ids)
            body.extend(f"\tcollapsed -> {head} [{_COLLAPSED_EDGE}]\n" for head in heads)
        g.body = body
        g.drawn_nodes, g.omitted_nodes = n_drawn, omitted
        return g

    def _emit_clusters(self, body: list[str]) -> None:
        """Append the module clusters to ``body``, each nested inside its parent module's cluster."""
        children: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for key in self.cluster_nodes:
            if key:
                children.setdefault(key[:-1], []).append(key)
        # An explicit stack of (key, opening?) instead of recursion, like the graph walk.
        stack: list[tuple[tuple[int, ...], bool]] = [(k, True) for k in children.get((), [])]
        n_clusters = 0
        while stack:
            key, opening = stack.pop()
            indent = "\t" * len(key)
            if not opening:
                body.append(f"{indent}}}\n")
                continue
            module = self.cluster_module[key]
            name = self.module_names.get(id(module))
            kind = _esc(type(module).__name__)
            title = f"<B>{_esc(name)}</B> · {kind}" if name else f"<B>{kind}</B>"
            title += "".join(_buffer_lines(module))
            fill = _CLUSTER_FILLS[min(len(key) - 1, len(_CLUSTER_FILLS) - 1)]
            body.append(f"{indent}subgraph cluster_{n_clusters} {{\n")
            attrs = {"label": f"<{title}>", "fillcolor": fill, **_CLUSTER}
            body.append(f"{indent}\tgraph [{_dot_attrs(attrs)}]\n")
            n_clusters += 1
            nodes = reversed(self.cluster_nodes[key])
            body.extend(f"{indent}\t{node_id} [{a}]\n" for node_id, a in nodes)
            stack.append((key, False))
            stack.extend((k, True) for k in children.get(key, []))  # popped last-found (first-run) first

    def _grad_styler(self) -> Callable[[Tensor], dict[str, str]]:
        """Edge attributes from the gradient norm of the tensor an edge carries (log-scaled penwidth)."""
        norms = {id(t): _norm(t.grad) for _, _, t in self.edges if t.grad is not None}
        finite = [n for n in norms.values() if math.isfinite(n) and n > 0]
        top = max(finite, default=1.0)
        lo = math.log10(top * _VANISHING)
        span = max(math.log10(top) - lo, 1e-12)

        def style(t: Tensor) -> dict[str, str]:
            n = norms.get(id(t))
            if n is None:
                return {}
            tip = {"tooltip": f"‖grad‖ = {n:.3g}"}
            if not math.isfinite(n):
                return {**tip, "color": "red", "penwidth": "2.5"}
            if n < top * _VANISHING:
                return {**tip, "color": "#b3b3b3", "style": "dashed", "penwidth": "0.8"}
            width = 0.8 + 3.2 * (math.log10(n) - lo) / span
            return {**tip, "penwidth": f"{width:.2f}", **({"color": "#a61e1e"} if n > _LARGE else {})}

        return style


def _count_beyond(cut: list[Tensor], drawn: set[int]) -> int:
    """How many tensor and op nodes lie behind the cut tensors and were not drawn (iterative walk)."""
    seen = {id(t) for t in cut}
    stack = list(cut)
    count = 0
    while stack:
        t = stack.pop()
        ctx = t._ctx
        count += 1
        if ctx is None:
            continue
        count += 1
        for parent in ctx.parents:
            if id(parent) not in seen and id(parent) not in drawn:
                seen.add(id(parent))
                stack.append(parent)
    return count


def _names(params: Any) -> tuple[dict[int, str], dict[int, str]]:
    """(id(tensor) -> name, id(module) -> dotted name) from a mapping of tensors or a Module."""
    if params is None:
        return {}, {}
    if isinstance(params, Mapping):
        names: dict[int, str] = {}
        for name, t in params.items():
            if not isinstance(t, Tensor):
                raise TypeError(f"draw_graph: params[{name!r}] is a {type(t).__name__}, not a Tensor")
            names.setdefault(id(t), str(name))
        return names, {}
    if not hasattr(params, "named_parameters"):
        raise TypeError(
            f"draw_graph: params must be a mapping of name -> Tensor or a Module, got {type(params).__name__}"
        )
    names = {}
    for name, t in params.named_parameters():
        names.setdefault(id(t), name)
    modules = {}
    if hasattr(params, "named_modules"):
        for name, m in params.named_modules():
            modules.setdefault(id(m), name)
    return names, modules


_DTYPE_NAMES: dict[Any, str] = {}


def _buffer_lines(module: Any) -> list[str]:
    """Label lines for a module's own buffers (BatchNorm's running statistics): name, shape, dtype, mean.

    Buffers are state without a gradient that no op of the graph reads as a parameter, so they are listed
    in the module's cluster title rather than drawn as nodes.
    """
    named = getattr(module, "named_buffers", None)
    if named is None:
        return []
    lines = []
    for name, buf in named(recurse=False):
        value = f" mean {_number(np.mean(buf))}" if np.size(buf) > 1 else f" = {_number(buf)}"
        text = f"{name} {_shape(np.shape(buf))} {_dtype_name(buf.dtype)}{value}"
        lines.append(f'<BR ALIGN="LEFT"/><FONT POINT-SIZE="9">{_esc(text)}</FONT>')
    return lines


def _dtype_name(dtype: Any) -> str:
    """str(dtype), memoised: NumPy builds the name anew on every call, a real cost over 10,000 tensors."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _shape(shape: tuple[int, ...]) -> str:
    return "scalar" if not shape else str(tuple(shape))


def _number(x: Any) -> str:
    return f"{float(np.asarray(x).reshape(-1)[0]):.4g}"


def _norm(g: Any) -> float:
    """The 2-norm in float64, so that a float32 gradient with large entries does not overflow to inf."""
    return float(np.sqrt(np.sum(np.square(np.asarray(g, dtype=np.float64)))))


def _summary(value: Any) -> str:
    """Short text for an op attribute: numbers, small tuples as they are; arrays etc. summarised."""
    if isinstance(value, bool | np.bool_ | str) or value is None:
        text = str(value)
    elif isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        text = f"{float(value):.4g}"
    elif isinstance(value, np.ndarray):
        text = (
            np.array2string(value, separator=",", precision=3)
            if value.size <= 4 and value.ndim <= 1
            else f"{value.dtype}[{'×'.join(map(str, value.shape))}]"
        )
    elif isinstance(value, Tensor):
        text = f"Tensor{_shape(value.shape)}"
    elif isinstance(value, slice):
        parts = ["" if v is None else _summary(v) for v in (value.start, value.stop, value.step)]
        text = ":".join(parts[:2] if value.step is None else parts)
    elif value is Ellipsis:
        text = "..."
    elif isinstance(value, tuple | list) and len(value) <= 6:
        inner = ", ".join(_summary(v) for v in value)
        text = f"({inner}{',' if len(value) == 1 else ''})" if isinstance(value, tuple) else f"[{inner}]"
    elif isinstance(value, tuple | list):
        text = f"{type(value).__name__}[{len(value)}]"
    else:
        text = type(value).__name__
    return text if len(text) <= _MAX_ATTR_CHARS else text[: _MAX_ATTR_CHARS - 1] + "…"


def _attr_lines(attrs: Mapping[str, Any]) -> list[str]:
    """``key=value`` pairs, escaped, packed into lines of about 28 characters."""
    lines: list[str] = []
    current = ""
    for key, value in attrs.items():
        if key in _PAIR_ATTRS and isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
            value = value[0]  # stride=(1, 1) reads as PyTorch's stride=1
        item = f"{key}={_summary(value)}"
        if current and len(current) + 1 + len(item) > 28:
            lines.append(current)
            current = item
        else:
            current = f"{current} {item}" if current else item
    if current:
        lines.append(current)
    return [_esc(line) for line in lines]


# ---- one picture of a model ------------------------------------------------------------------------------
class _Model(Protocol):
    def __call__(self, x: Tensor) -> Tensor: ...
    def named_parameters(self) -> Iterable[tuple[str, Tensor]]: ...


def write_model_graph(
    model: _Model,
    out: str | os.PathLike[str],
    *,
    fmt: str = "svg",
    grad: bool = False,
    batch_size: int = 8,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
) -> pathlib.Path:
    """Render the graph of one training batch of ``model`` to exactly ``out`` (no extension appended).

    The batch is ``microgradcnn.train.random_batch_loss``'s, random but seeded: inputs uniform in [-0.5, 0.5)
    (the range of MNIST pixels after ``x / 255 - 0.5``) of shape ``(batch_size, *input_shape)``, labels
    uniform over the model's classes. The root is ``F.cross_entropy(model(x), y)``; with ``grad`` it is
    backpropagated and gradient norms are shown (the parameters' previous ``.grad`` are put back afterwards).
    The file is written atomically.

    Shapes: ``model`` maps (N, *input_shape) to logits (N, classes). ``input_shape`` defaults to the model's
    ``input_shape`` attribute if it has one, else (in_channels, 28, 28) for a first layer with
    ``in_channels`` (a conv net, e.g. the seed CNN: (1, 28, 28)), else (in_features,).

    Returns:
        ``pathlib.Path(out)``.

    Raises:
        ValueError: ``fmt`` not one of svg, png, pdf; ``batch_size`` < 1; an input shape that cannot be
            inferred; or a model output that is not (N, classes).
        TypeError: ``batch_size`` is not an int.
        GraphvizNotFoundError: the ``dot`` executable is missing (nothing is written).
    """
    from microgradcnn.train import random_batch_loss  # the training side: imported only when drawing one

    if fmt not in FORMATS:
        raise ValueError(f"write_model_graph: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    batch_size = check_int(batch_size, "batch_size", "write_model_graph", minimum=1)
    x, loss = random_batch_loss(model, batch_size, seed=seed, input_shape=input_shape)
    params = [p for _, p in model.named_parameters()]
    saved = [p.grad for p in params]
    try:
        if grad:
            for p in params:
                p.grad = None  # show this batch's gradient, not one accumulated over earlier steps
            loss.backward()
        names, module_names = _names(model)
        names.setdefault(id(x), "x")
        names[id(loss)] = "loss"
        drawer = _Drawer(names, module_names, show_shapes=True, show_grad=grad, show_attrs=True)
        picture = drawer.draw((loss,), "TB", DEFAULT_MAX_NODES).pipe(format=fmt)
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
    path = pathlib.Path(out)
    write_bytes_atomic(path, picture)
    return path


# ---- a confusion matrix --------------------------------------------------------------------------------
def write_confusion_matrix(
    matrix: np.ndarray, out: str | os.PathLike[str], *, title: str = ""
) -> pathlib.Path:
    """Draw a confusion matrix as a PNG at exactly ``out`` (written atomically) and return ``Path(out)``.

    Cells are shaded white to dark blue by their share of the true class (row), with the counts written in
    and the class indices along both axes; ``title`` goes above. Drawn with OpenCV, no Graphviz needed.

    Shapes: matrix (K, K) of counts, rows the true class, columns the predicted one (``Evaluation``'s
    ``confusion_matrix``).

    Raises:
        ValueError: ``matrix`` is not a square 2-d array.
        OSError: naming ``out``, if it cannot be written.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"write_confusion_matrix: want a square (K, K) matrix of counts, got {matrix.shape}")
    return write_bytes_atomic(out, _confusion_png(matrix, title))


def _confusion_png(matrix: np.ndarray, title: str) -> bytes:
    import cv2  # OpenCV is only needed for this picture

    k = matrix.shape[0]
    cell, left, top = 48, 70, 90
    size = (top + k * cell + 20, left + k * cell + 20)
    canvas = np.full((*size, 3), 255, dtype=np.uint8)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    # Shade cells white -> dark blue by the share of the true class: one block per entry, no pixel loops.
    shade = (255 * (1 - share)).astype(np.uint8)
    blocks = np.kron(shade, np.ones((cell, cell), dtype=np.uint8))  # (K*cell, K*cell)
    region = canvas[top : top + k * cell, left : left + k * cell]
    region[..., 0] = 255 - (255 - blocks) // 3  # blue channel stays high: a blue colour map (BGR)
    region[..., 1] = blocks
    region[..., 2] = blocks
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(k):
        for j in range(k):
            text = str(int(matrix[i, j]))
            colour = (255, 255, 255) if share[i, j] > 0.5 else (0, 0, 0)
            (w, h), _ = cv2.getTextSize(text, font, 0.45, 1)
            origin = (left + j * cell + (cell - w) // 2, top + i * cell + (cell + h) // 2)
            cv2.putText(canvas, text, origin, font, 0.45, colour, 1, cv2.LINE_AA)
        cv2.putText(
            canvas, str(i), (left + i * cell + cell // 2 - 5, top - 8), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
        cv2.putText(
            canvas, str(i), (left - 22, top + i * cell + cell // 2 + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
    for t in range(k + 1):  # grid lines
        cv2.line(canvas, (left, top + t * cell), (left + k * cell, top + t * cell), (160, 160, 160), 1)
        cv2.line(canvas, (left + t * cell, top), (left + t * cell, top + k * cell), (160, 160, 160), 1)
    cv2.putText(canvas, title, (10, 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        canvas, "predicted", (left + k * cell // 2 - 40, top - 32), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA
    )
    cv2.putText(canvas, "true", (8, top + k * cell // 2), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError("OpenCV could not encode the confusion-matrix PNG")
    return encoded.tobytes()
