"""draw_graph / write_model_graph: DOT structure, labels, clusters, NaN, collapse, grads, rendering, files."""

from __future__ import annotations

import os
import re
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.tensor import scope
from microgradcnn.viz import (
    ComputationGraph,
    GraphvizNotFoundError,
    draw_graph,
    write_confusion_matrix,
    write_model_graph,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- a tiny Module stand-in: named_parameters/named_modules and forward inside scope(self) -------------
class Mod:
    def __init__(self, **children):
        self.children = children
        self.params = {}

    def named_parameters(self, prefix=""):
        for name, p in self.params.items():
            yield prefix + name, p
        for name, child in self.children.items():
            yield from child.named_parameters(f"{prefix}{name}.")

    def named_modules(self, prefix=""):
        yield prefix.rstrip("."), self
        for name, child in self.children.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def __call__(self, x):
        with scope(self):
            return self.forward(x)


class Affine(Mod):
    def __init__(self, n_in, n_out, rng):
        super().__init__()
        self.in_features = n_in
        self.params = {
            "weight": mg.Tensor(rng.standard_normal((n_out, n_in)).astype(np.float32), requires_grad=True),
            "bias": mg.Tensor(np.zeros(n_out, np.float32), requires_grad=True),
        }

    def forward(self, x):
        return F.linear(x, self.params["weight"], self.params["bias"])


class Act(Mod):
    def forward(self, x):
        return x.relu()


class Block(Mod):
    def forward(self, x):
        return self.children["act"](self.children["fc"](x))


class Net(Mod):
    def forward(self, x):
        return self.children["head"](self.children["block"](x))


def make_net(rng=None):
    rng = rng or np.random.default_rng(0)
    return Net(block=Block(fc=Affine(5, 4, rng), act=Act()), head=Affine(4, 3, rng))


# ---- reading DOT back ------------------------------------------------------------------------------------
NODE_LINE = re.compile(r"^\s*(\w+) \[(.*)\]$")
EDGE_LINE = re.compile(r"^\s*(\w+) -> (\w+)(?: \[(.*)\])?$")
CLUSTER_LABEL = re.compile(r"^\s*graph \[label=<(.*?)> \w+=")


def text(html: str) -> str:
    """An HTML label's visible text."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def parse(source: str):
    """(nodes: id -> (attrs, cluster labels outermost first), edges: [(tail, head, attrs)] along the data)."""
    nodes, edges, stack = {}, [], []
    for line in source.splitlines():
        if line.strip().startswith("subgraph cluster_"):
            stack.append(None)
        elif stack and (m := CLUSTER_LABEL.match(line)) and stack[-1] is None:
            stack[-1] = text(m.group(1))
        elif line.strip() == "}" and stack:
            stack.pop()
        elif m := EDGE_LINE.match(line):
            tail, head, attrs = m.group(1), m.group(2), m.group(3) or ""
            if 'dir="back"' in attrs:  # drawn head-first for layout; the data flows the other way
                tail, head = head, tail
            edges.append((tail, head, attrs))
        elif (m := NODE_LINE.match(line)) and m.group(1) not in ("graph", "node", "edge"):
            nodes[m.group(1)] = (m.group(2), tuple(stack))
    return nodes, edges


def label_of(nodes, node_id):
    """The visible text of a node's HTML label."""
    m = re.match(r"label=<(.*?)>(?: \w+=|$)", nodes[node_id][0])
    return text(m.group(1)) if m else ""


def find(nodes, needle):
    """The ids of nodes whose visible text contains ``needle``."""
    return [n for n in nodes if needle in label_of(nodes, n)]


def grad_norm(label):
    m = re.search(r"‖grad‖ = (\S+)", label)
    return float(m.group(1)) if m else None


def penwidth(attrs):
    m = re.search(r'penwidth="([\d.]+)"', attrs)
    return float(m.group(1)) if m else None


# ---- structure and labels -------------------------------------------------------------------------------
def test_small_expression_has_one_node_per_tensor_and_op_and_edges_along_the_data_flow():
    x = mg.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    w = mg.Tensor(np.full((2, 3), 2.0, np.float32), requires_grad=True)
    y = (x * w).sum()
    g = draw_graph(y, params={"w": w})
    assert isinstance(g, ComputationGraph)
    nodes, edges = parse(g.source)
    assert len(nodes) == g.drawn_nodes == 6  # x, w, x*w, y + mul, sum
    assert len(edges) == 5
    (mul,) = find(nodes, "mul")
    (summ,) = find(nodes, "sum")
    (w_node,) = find(nodes, "w (2, 3) float32")
    (x_node,) = find(nodes, "leaf")
    (root,) = [n for n in nodes if "= 12" in label_of(nodes, n)]
    pairs = {(t, h) for t, h, _ in edges}
    (prod,) = [h for t, h in pairs if t == mul]
    assert {(x_node, mul), (w_node, mul), (prod, summ), (summ, root)} <= pairs
    assert "(2, 3) float32" in label_of(nodes, prod)
    assert "scalar float32" in label_of(nodes, root)
    assert "axis=(0, 1)" in label_of(nodes, summ)


def test_leaves_parameters_constants_intermediates_and_roots_are_styled_apart():
    x = mg.Tensor(np.ones(3, np.float64), requires_grad=True)
    w = mg.Tensor(np.ones(3, np.float64), requires_grad=True)
    data = mg.Tensor(np.arange(3.0))
    y = ((x * w + data) * 0.5).sum()
    nodes, _ = parse(draw_graph(y, params={"weight": w}).source)
    fills = {label_of(nodes, n): re.search(r'fillcolor="(#\w+)"', a).group(1) for n, (a, _) in nodes.items()}
    kinds = {
        "param": fills["weight (3,) float64"],
        "leaf": fills["leaf (3,) float64"],
        "input": fills["input (3,) float64"],
        "const": fills["const 0.5"],
        "op": fills["mul"],
        "root": fills["= 3 scalar float64"],  # sum((1 + [0, 1, 2]) * 0.5)
        "intermediate": fills["(3,) float64"],
    }
    assert kinds["const"] == kinds["input"]  # both hold data that gets no gradient
    assert len(set(kinds.values())) == len(kinds) - 1  # every other kind has its own colour


def test_show_shapes_false_hides_shapes_and_dtypes():
    x = mg.Tensor(np.ones((4, 5), np.float32), requires_grad=True)
    source = draw_graph(x.relu().sum(), show_shapes=False).source
    assert "(4, 5)" not in source
    assert "float32" not in source
    assert "shape=point" in source.replace('"', "")  # the unnamed intermediate shrinks to a dot


def test_op_attributes_are_shown_and_arrays_are_summarised_not_dumped():
    rng = np.random.default_rng(0)
    x = mg.Tensor(rng.standard_normal((6, 1, 7, 7)).astype(np.float32), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((3, 1, 3, 3)).astype(np.float32), requires_grad=True)
    logits = F.conv2d(x, w, stride=(2, 1), padding=1).flatten(1)
    logits = F.linear(logits, mg.Tensor(rng.standard_normal((5, logits.shape[1])).astype(np.float32)))
    target = np.array([4, 1, 0, 2, 2, 3])
    loss = F.cross_entropy(logits, target)
    nodes, _ = parse(draw_graph(loss).source)
    (conv,) = find(nodes, "conv2d")
    assert "stride=(2, 1) padding=1" in label_of(nodes, conv)  # equal (h, w) pairs read as one int
    (ce,) = find(nodes, "cross_entropy")
    assert f"target={target.astype(np.intp).dtype}[6]" in label_of(nodes, ce)
    assert "4, 1" not in label_of(nodes, ce)
    assert "reduction=mean" in label_of(nodes, ce)
    without = parse(draw_graph(loss, show_attrs=False).source)[0]
    assert label_of(without, find(without, "conv2d")[0]) == "conv2d"


def test_big_attribute_values_never_reach_the_label():
    x = mg.Tensor(np.arange(40.0).reshape(8, 5), requires_grad=True)
    index = np.array([7, 0, 3, 3, 5, 1, 2, 6, 6, 4])
    nodes, _ = parse(draw_graph(x[index].sum()).source)
    (getitem,) = find(nodes, "getitem")
    label = label_of(nodes, getitem)
    assert "int64[10]" in label or "intp[10]" in label
    assert "7, 0, 3" not in label


def test_draw_graph_accepts_several_roots_and_shares_their_history():
    x = mg.Tensor(np.ones(2), requires_grad=True)
    h = x.tanh()
    a, b = h.sum(), (h * h).sum()
    nodes, edges = parse(draw_graph(a, b).source)
    (tanh,) = find(nodes, "tanh")
    assert len(nodes) == 9  # x; tanh, h; sum, a; mul, h*h; sum, b
    (h_node,) = [head for tail, head, _ in edges if tail == tanh]
    consumers = sorted(label_of(nodes, head).split()[0] for tail, head, _ in edges if tail == h_node)
    assert consumers == ["mul", "mul", "sum"]
    roots = [n for n in nodes if "#fff1a8" in nodes[n][0]]
    assert len(roots) == 2


# ---- module clusters -----------------------------------------------------------------------------------
def test_ops_inside_modules_are_clustered_by_dotted_name_and_nested():
    net = make_net()
    x = mg.Tensor(np.ones((2, 5), np.float32))
    loss = (net(x) ** 2).mean()
    nodes, _ = parse(draw_graph(loss, params=net).source)
    (relu,) = find(nodes, "relu")
    assert nodes[relu][1] == ("Net", "block · Block", "block.act · Act")
    linear_clusters = {nodes[n][1] for n in find(nodes, "linear")}
    assert linear_clusters == {("Net", "block · Block", "block.fc · Affine"), ("Net", "head · Affine")}
    (weight,) = find(nodes, "block.fc.weight")
    assert nodes[weight][1] == ("Net", "block · Block", "block.fc · Affine")  # a parameter joins its module
    assert "(4, 5) float32" in label_of(nodes, weight)
    (head_bias,) = find(nodes, "head.bias")
    assert nodes[head_bias][1] == ("Net", "head · Affine")
    (pow_op,) = find(nodes, "pow")  # the loss is computed outside the model
    assert nodes[pow_op][1] == ()
    (inp,) = find(nodes, "input")
    assert nodes[inp][1] == ()


def test_parameters_of_the_root_module_sit_in_its_cluster():
    layer = Affine(3, 2, np.random.default_rng(0))
    y = layer(mg.Tensor(np.ones((4, 3), np.float32))).sum()
    nodes, _ = parse(draw_graph(y, params=layer).source)
    (weight,) = find(nodes, "weight (2, 3) float32")
    (linear,) = find(nodes, "linear")
    assert nodes[weight][1] == nodes[linear][1] == ("Affine",)  # the root's name is "": its class labels it


def test_modules_without_names_are_labelled_by_class():
    net = make_net()
    loss = net(mg.Tensor(np.ones((2, 5), np.float32))).sum()
    nodes, _ = parse(draw_graph(loss).source)
    (relu,) = find(nodes, "relu")
    assert nodes[relu][1] == ("Net", "Block", "Act")
    assert not find(nodes, "block.fc.weight")  # no names without params


def test_scalar_constants_made_inside_a_module_stay_in_its_cluster():
    class Half(Mod):
        def forward(self, x):
            return x * 0.5

    m = Half()
    y = m(mg.Tensor(np.ones(3), requires_grad=True)).sum()
    nodes, _ = parse(draw_graph(y, params=m).source)
    (const,) = find(nodes, "const 0.5")
    assert nodes[const][1] == ("Half",)


# ---- NaN / inf ------------------------------------------------------------------------------------------
def test_nan_and_inf_are_drawn_red_and_the_op_that_made_them_too():
    x = mg.Tensor(np.array([1.0, -1.0]), requires_grad=True)
    with np.errstate(invalid="ignore"):
        y = x.log()  # log(-1) = NaN is born here
    z = (y * 2.0).sum()
    nodes, _ = parse(draw_graph(z).source)
    red = [label_of(nodes, n) for n, (attrs, _) in nodes.items() if re.search(r'\bcolor="red"', attrs)]
    assert "log" in red
    assert "mul" not in red  # its input was already NaN: it did not make it
    assert sum("contains NaN" in label for label in red) == 3  # log(x), y*2, the sum
    assert not any(label.startswith("leaf") for label in red)
    inf = mg.Tensor(np.array([np.inf, 1.0]), requires_grad=True)
    inf_nodes, _ = parse(draw_graph(inf.sum()).source)
    (leaf,) = find(inf_nodes, "leaf")
    assert "contains inf" in label_of(inf_nodes, leaf)
    assert 'color="red"' in inf_nodes[leaf][0]


# ---- collapsing big graphs -----------------------------------------------------------------------------
def chain(n):
    x = mg.Tensor(np.linspace(-1, 1, 4), requires_grad=True)
    y = x
    for _ in range(n):
        y = y.tanh()
    return y


@pytest.mark.parametrize("max_nodes", [1, 2, 9, 10, 50])
def test_beyond_max_nodes_one_note_says_how_many_nodes_were_left_out(max_nodes):
    y = chain(40)  # 41 tensors + 40 ops = 81 nodes
    g = draw_graph(y, max_nodes=max_nodes)
    nodes, edges = parse(g.source)
    assert g.drawn_nodes <= max(max_nodes, 2)  # the root (and its op) are always drawn
    assert g.drawn_nodes + g.omitted_nodes == 81
    assert len(nodes) == g.drawn_nodes + 1
    assert f"{g.omitted_nodes} more nodes" in label_of(nodes, "collapsed")
    assert f"max_nodes={max_nodes}" in label_of(nodes, "collapsed")
    assert {n for t, h, _ in edges for n in (t, h)} <= set(nodes)  # no edge to an undeclared node
    assert [h for t, h, _ in edges if t == "collapsed"]  # the note feeds the drawn part


def test_no_note_when_everything_fits_and_max_nodes_none_draws_all():
    y = chain(30)
    assert "collapsed" not in draw_graph(y, max_nodes=61).source
    g = draw_graph(y, max_nodes=None)
    assert (g.drawn_nodes, g.omitted_nodes) == (61, 0)


def test_a_long_chain_is_walked_without_recursion():
    y = chain(3000)  # far deeper than Python's recursion limit
    g = draw_graph(y, max_nodes=None)
    assert g.drawn_nodes == 6001
    g = draw_graph(y)
    assert g.drawn_nodes <= 500
    assert g.drawn_nodes + g.omitted_nodes == 6001


# ---- gradients ----------------------------------------------------------------------------------------
def test_show_grad_shows_norms_where_grad_exists_and_weighs_edges_by_them():
    rng = np.random.default_rng(1)
    big = mg.Tensor(rng.standard_normal(4), requires_grad=True)
    small = mg.Tensor(rng.standard_normal(4), requires_grad=True)
    tiny = mg.Tensor(rng.standard_normal(4), requires_grad=True)
    hidden = (big * 1e-3).tanh()
    kept = (small * 1e3).tanh().retain_grad()
    loss = (hidden * 100.0).sum() + kept.sum() + (tiny * 1e-9).sum()
    loss.backward()
    g = draw_graph(loss, params={"big": big, "small": small, "tiny": tiny}, show_grad=True)
    nodes, edges = parse(g.source)
    shown = {n: grad_norm(label_of(nodes, n)) for n in nodes if grad_norm(label_of(nodes, n)) is not None}
    for name, t in {"big": big, "small": small, "tiny": tiny}.items():
        (node,) = find(nodes, f"{name} (4,)")
        assert shown.pop(node) == pytest.approx(np.linalg.norm(t.grad), rel=1e-3)
    (kept_norm,) = shown.values()  # of the intermediates, only the retained one has a grad to show
    assert kept_norm == pytest.approx(np.linalg.norm(kept.grad), rel=1e-3)
    width = {t: penwidth(a) for t, h, a in edges}
    (big_node,), (tiny_node,) = find(nodes, "big (4,)"), find(nodes, "tiny (4,)")
    assert width[big_node] > width[find(nodes, "small (4,)")[0]]  # |d/d big| = 0.1 > |d/d small| ~ 2e-4
    tiny_attrs = next(a for t, h, a in edges if t == tiny_node)
    assert 'style="dashed"' in tiny_attrs  # 1e-9: vanishing next to the others
    no_grad = draw_graph(loss, params={"big": big})
    assert "‖grad‖" not in no_grad.source
    assert "penwidth" not in re.sub(r"\w+ \[label.*", "", no_grad.source)  # no edge is weighed


def test_graph_can_be_drawn_after_backward():
    x = mg.Tensor(np.ones((2, 2)), requires_grad=True)
    y = (x @ x).sum()
    y.backward()
    nodes, edges = parse(draw_graph(y, show_grad=True).source)
    assert find(nodes, "matmul")
    assert len(edges) == 5  # x twice into matmul, matmul -> x@x -> sum -> root
    assert "‖grad‖" in label_of(nodes, find(nodes, "leaf")[0])


# ---- arguments -----------------------------------------------------------------------------------------
def test_bad_arguments_raise_clear_errors():
    x = mg.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="at least one root"):
        draw_graph()
    with pytest.raises(TypeError, match="root 1 is a ndarray"):
        draw_graph(x, np.ones(2))
    with pytest.raises(ValueError, match="rankdir"):
        draw_graph(x, rankdir="UP")
    with pytest.raises(ValueError, match="max_nodes must be at least 1"):
        draw_graph(x, max_nodes=0)
    with pytest.raises(TypeError, match="params"):
        draw_graph(x, params=[x])
    with pytest.raises(TypeError, match=r"params\['w'\] is a ndarray"):
        draw_graph(x, params={"w": np.ones(2)})


def test_rankdir_reaches_the_dot_source():
    x = mg.Tensor(np.ones(2), requires_grad=True)
    assert "rankdir=LR" in draw_graph(x.sum(), rankdir="LR").source


# ---- rendering through dot -----------------------------------------------------------------------------
def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def seed_loss():
    models = pytest.importorskip("microgradcnn.models")
    rng = np.random.default_rng(0)
    model = models.seed_cnn(rng=rng)
    x = mg.Tensor(rng.random((2, 1, 28, 28), dtype=np.float32) - 0.5)
    loss = F.cross_entropy(model(x), np.array([3, 7]))
    loss.backward()
    return model, loss


def test_seed_cnn_reads_as_its_layers(seed_loss):
    model, loss = seed_loss
    nodes, _ = parse(draw_graph(loss, params=model).source)
    module_names = dict(model.named_modules())
    for op in ("conv2d", "max_pool2d", "linear"):
        (node,) = find(nodes, op)
        (cluster,) = nodes[node][1][-1:]
        name = cluster.split(" · ")[0]
        assert name in module_names
    (conv,) = find(nodes, "conv2d")
    assert "stride=1 padding=0" in label_of(nodes, conv)
    for name, p in model.named_parameters():
        (node,) = find(nodes, f"{name} ")
        assert str(p.shape) in label_of(nodes, node)
    (ce,) = find(nodes, "cross_entropy")
    assert nodes[ce][1] == ()


@pytest.mark.needs("dot")
def test_render_svg_parses_as_xml_and_names_the_seed_cnn_ops(seed_loss, tmp_path):
    model, loss = seed_loss
    svg = draw_graph(loss, params=model, show_grad=True).pipe(format="svg")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = " ".join(el.text or "" for el in root.iter() if el.tag.endswith("text"))
    for op in ("conv2d", "max_pool2d", "reshape", "linear", "cross_entropy", "0.weight", "‖grad‖"):
        assert op in texts
    out = draw_graph(loss, params=model).render(tmp_path / "g", format="svg")
    assert out.endswith("g.svg")  # graphviz's own render: appends the extension (write_model_graph doesn't)
    ET.parse(out)


@pytest.mark.needs("dot")
def test_render_png_has_signature_and_a_sane_size(seed_loss):
    model, loss = seed_loss
    width, height = png_size(draw_graph(loss, params=model).pipe(format="png"))
    assert 200 < width < 3000
    assert 300 < height < 5000
    assert height > width  # top to bottom: a tall picture


@pytest.mark.needs("dot")
def test_render_works_without_models_module_too():
    net = make_net()
    loss = net(mg.Tensor(np.ones((2, 5), np.float32))).sum()
    svg = draw_graph(loss, params=net).pipe(format="svg")
    texts = " ".join(el.text or "" for el in ET.fromstring(svg).iter() if el.tag.endswith("text"))
    assert "block.fc" in texts
    assert "relu" in texts


def test_missing_dot_raises_with_install_instructions(monkeypatch, tmp_path):
    x = mg.Tensor(np.ones(2), requires_grad=True)
    g = draw_graph(x.sum())  # building needs no dot
    monkeypatch.setenv("PATH", "")
    assert "sum" in g.source
    for render in (lambda: g.pipe(format="png"), lambda: g.render(tmp_path / "g", format="svg")):
        with pytest.raises(GraphvizNotFoundError) as info:
            render()
        message = str(info.value)
        assert isinstance(info.value, RuntimeError)
        for hint in (
            "apt-get install graphviz",
            "brew install graphviz",
            "conda install -c conda-forge graphviz",
        ):
            assert hint in message
    out = tmp_path / "model.svg"
    with pytest.raises(GraphvizNotFoundError):
        write_model_graph(make_net(), out, input_shape=(5,))
    assert list(tmp_path.iterdir()) == [tmp_path / "g"]  # render saved its DOT source; no picture, no temp


# ---- write_model_graph --------------------------------------------------------------------------------
@pytest.mark.needs("dot")
@pytest.mark.parametrize(("fmt", "magic"), [("svg", b"<?xml"), ("png", PNG_SIGNATURE), ("pdf", b"%PDF")])
def test_write_model_graph_writes_exactly_the_given_path(tmp_path, fmt, magic):
    out = tmp_path / "sub" / "graph.picture"
    result = write_model_graph(make_net(), out, fmt=fmt, input_shape=(5,))
    assert result == out
    assert out.read_bytes().startswith(magic)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["graph.picture"]
    assert out.stat().st_mode & 0o044 == 0o044 & ~_umask()  # not mkstemp's private 0600


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.needs("dot")
def test_write_model_graph_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "graph.svg"
    out.write_bytes(b"old picture")

    def interrupted(src, dst):
        assert os.path.dirname(src) == os.path.dirname(dst)  # a rename within one directory
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_model_graph(make_net(), out, input_shape=(5,))
    assert out.read_bytes() == b"old picture"
    assert list(tmp_path.iterdir()) == [out]  # the temp file is gone


def test_write_model_graph_rejects_bad_format_and_batch(tmp_path):
    with pytest.raises(ValueError, match="svg, png, pdf"):
        write_model_graph(make_net(), tmp_path / "g.jpg", fmt="jpg", input_shape=(5,))
    with pytest.raises(ValueError, match="batch_size"):
        write_model_graph(make_net(), tmp_path / "g.svg", batch_size=0, input_shape=(5,))
    assert not list(tmp_path.iterdir())


@pytest.mark.needs("dot")
def test_write_model_graph_infers_the_input_shape(tmp_path):
    out = write_model_graph(make_net(), tmp_path / "g.svg", batch_size=3)  # first layer: in_features=5
    assert "(3, 5) float32" in text(out.read_text())

    class Opaque(Mod):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="input_shape"):
        write_model_graph(Opaque(), tmp_path / "h.svg")


@pytest.mark.needs("dot")
def test_write_model_graph_with_grad_shows_norms_and_leaves_grads_as_they_were(tmp_path):
    net = make_net()
    params = dict(net.named_parameters())
    params["head.bias"].grad = np.full(3, 7.0, np.float32)
    out = write_model_graph(net, tmp_path / "g.svg", grad=True, input_shape=(5,), seed=3)
    svg = text(out.read_text())
    assert svg.count("‖grad‖") == 4
    assert "‖grad‖ = 12.12" not in svg  # the norm of the old grad (7 * sqrt(3)) was not added in
    np.testing.assert_array_equal(params["head.bias"].grad, np.full(3, 7.0, np.float32))
    assert params["head.weight"].grad is None
    again = write_model_graph(net, tmp_path / "h.svg", grad=True, input_shape=(5,), seed=3)
    assert text(again.read_text()) == svg  # seeded: the same batch each time


@pytest.mark.needs("dot")
def test_write_model_graph_draws_the_seed_cnn(tmp_path):
    models = pytest.importorskip("microgradcnn.models")
    out = write_model_graph(models.seed_cnn(), tmp_path / "seed", fmt="svg")
    labels = text(out.read_text())
    for needle in ("(8, 1, 28, 28) float32", "conv2d", "max_pool2d", "linear", "cross_entropy", "loss ="):
        assert needle in labels


# ---- write_confusion_matrix ---------------------------------------------------------------------------
def test_write_confusion_matrix_draws_a_png_shaded_by_row_share(tmp_path):
    cv2 = pytest.importorskip("cv2")
    matrix = np.array([[9, 1], [0, 0]])  # row 1 has no images: no division by zero, an unshaded row
    out = write_confusion_matrix(matrix, tmp_path / "cm", title="two classes")
    assert out == tmp_path / "cm"
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    image = cv2.imread(str(out))
    cell, left, top = 48, 70, 90  # the layout's constants: cell (0, 0) is 90 % of its row, (0, 1) 10 %
    dark, light = image[top + 5, left + 5], image[top + 5, left + cell + 5]
    assert dark[2] < light[2]  # red and green fall as the share rises (white -> blue)
    assert list(image[top + cell + 5, left + 5]) == [255, 255, 255]  # the empty row stays white
    with pytest.raises(ValueError, match=r"square \(K, K\) matrix"):
        write_confusion_matrix(np.zeros((2, 3)), tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm"]


def test_a_batchnorm_cluster_lists_its_buffers():
    from microgradcnn.models import bn_cnn
    from microgradcnn.train import random_batch_loss

    model = bn_cnn(rng=np.random.default_rng(0))
    _, loss = random_batch_loss(model, 4)
    source = draw_graph(loss, params=model).source
    titles = [line for line in source.splitlines() if "label=<<B>" in line]
    bn2d = next(t for t in titles if "<B>5</B> · BatchNorm2d" in t)  # the second conv block's BatchNorm
    mean = float(model[5].running_mean.mean())
    assert f"running_mean (32,) float32 mean {mean:.4g}" in bn2d
    assert "running_var (32,) float32" in bn2d
    assert "num_batches_tracked scalar int64 = 1" in bn2d  # one training batch went through it
    assert "running_mean (128,)" in next(t for t in titles if "BatchNorm1d" in t)
    assert not any("running" in t for t in titles if "Conv2d" in t or "Dropout" in t)  # no buffers there


@pytest.mark.needs("dot")
def test_a_graph_displays_inline_in_jupyter_as_svg():
    x = mg.Tensor(np.ones(3), requires_grad=True)
    bundle = draw_graph((x * 2).sum())._repr_mimebundle_()
    assert list(bundle) == ["image/svg+xml"]  # what Jupyter shows: Graphviz's own SVG, rendered offline
    svg = ET.fromstring(bundle["image/svg+xml"])
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert "sum" in bundle["image/svg+xml"]
