"""The nn.Modules on small hand-made window graphs: shapes, learning, the KD loss formulas, preset sizes."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from torch_geometric.data import Batch, Data  # noqa: E402

from kdgat_core.config import preset  # noqa: E402
from kdgat_core.models import CANGraphGAT, CANGraphVGAE, QNetwork, count_parameters  # noqa: E402
from kdgat_core.stages.distillation import LatentProjection, freeze, gat_kd_loss, vgae_kd_loss  # noqa: E402

NUM_IDS, NODE_DIM, EDGE_DIM = 12, 5, 3


def window(n: int, attack: int, gen: torch.Generator) -> Data:
    """A chain of n messages; attack windows use the high ids and shifted features."""
    ids = torch.randint(0, 6, (n,), generator=gen) + 6 * attack
    x = torch.randn(n, NODE_DIM, generator=gen) * 0.3 + 2.0 * attack
    ei = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    ei = torch.cat([ei, ei.flip(0)], 1)
    return Data(
        x=x,
        node_id=ids,
        edge_index=ei,
        edge_attr=torch.randn(ei.size(1), EDGE_DIM, generator=gen),
        y=torch.tensor([attack]),
    )


@pytest.fixture
def batch() -> Batch:
    gen = torch.Generator().manual_seed(0)
    return Batch.from_data_list([window(5 + i % 4, i % 2, gen) for i in range(12)])


def test_vgae_shapes_and_scores(batch):
    model = CANGraphVGAE(NUM_IDS, NODE_DIM, EDGE_DIM, [16, 8], latent_dim=4, heads=2, embedding_dim=4)
    out = model(batch)
    n = batch.num_nodes
    assert out.z.shape == out.mu.shape == out.logstd.shape == (n, 4)
    assert out.x_hat.shape == (n, NODE_DIM) and out.id_logits.shape == (n, NUM_IDS)
    assert model.window_errors(batch, out).shape == (12, 3)
    assert model.window_score(batch, out).shape == (12,)
    assert model.latent_stats(batch, out).shape == (12, 2)
    assert set(model.loss_terms(batch, out)) == {"feature", "id", "edge", "kl"}


def test_vgae_without_edge_features(batch):
    model = CANGraphVGAE(NUM_IDS, NODE_DIM, 0, [8], latent_dim=4)
    assert model.loss(batch).isfinite()


def test_vgae_loss_decreases_and_scores_attacks_higher(batch):
    torch.manual_seed(0)
    normal = Batch.from_data_list([d for d in batch.to_data_list() if int(d.y) == 0])
    model = CANGraphVGAE(NUM_IDS, NODE_DIM, EDGE_DIM, [16, 8], latent_dim=4, heads=2, embedding_dim=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = model.loss(normal)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
    model.eval()
    with torch.no_grad():
        score = model.window_score(batch)
    # trained on normals only: the (unseen ids, shifted features) attack windows reconstruct worse
    assert score[batch.y == 1].min() > score[batch.y == 0].max()


def test_gat_shapes_and_learns(batch):
    torch.manual_seed(0)
    model = CANGraphGAT(NUM_IDS, NODE_DIM, EDGE_DIM, hidden=4, layers=3, heads=2, embedding_dim=4)
    assert model(batch).shape == (12, 2)
    assert model.graph_embedding(batch).shape == (12, 2 * 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch), batch.y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert (model.eval()(batch).argmax(-1) == batch.y).all()


@pytest.mark.parametrize("pooling", ["mean", "max", "add"])
def test_gat_poolings(batch, pooling):
    model = CANGraphGAT(NUM_IDS, NODE_DIM, 0, hidden=4, layers=2, heads=1, pooling=pooling)
    assert model(batch).shape == (12, 2)


def test_qnetwork_shape():
    q = QNetwork(state_dim=7, hidden=16, layers=2, num_actions=11)
    assert q(torch.randn(5, 7)).shape == (5, 11)


def test_gat_kd_loss_matches_formula():
    torch.manual_seed(0)
    s, t = torch.randn(6, 2), torch.randn(6, 2)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    T, alpha = 4.0, 0.7
    p_t = torch.softmax(t / T, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / T, -1))).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(s, y)
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert math.isclose(gat_kd_loss(s, t, y, T, alpha).item(), expected.item(), rel_tol=1e-5)
    # alpha=0 is plain cross-entropy; a student equal to its teacher pays no KL
    assert math.isclose(gat_kd_loss(s, t, y, T, 0.0).item(), ce.item(), rel_tol=1e-6)
    assert gat_kd_loss(t, t, y, T, 1.0).abs().item() < 1e-6


def test_vgae_kd_trains_student_towards_frozen_teacher(batch):
    torch.manual_seed(0)
    teacher = freeze(CANGraphVGAE(NUM_IDS, NODE_DIM, EDGE_DIM, [16, 8], latent_dim=8, heads=2))
    student = CANGraphVGAE(NUM_IDS, NODE_DIM, EDGE_DIM, [4], latent_dim=2)
    proj = LatentProjection(2, 8)
    before = [p.clone() for p in teacher.parameters()]
    opt = torch.optim.Adam(list(student.parameters()) + list(proj.parameters()), lr=3e-2)
    losses = []
    for _ in range(40):
        student.train()
        with torch.no_grad():
            t_out = teacher(batch)
        s_out = student(batch)
        loss = vgae_kd_loss(s_out, t_out, proj, student.loss(batch, s_out), alpha=0.7)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("arch", ["gat", "vgae"])
def test_student_preset_has_at_least_5x_fewer_parameters(arch):
    def build(size):
        cfg = preset(f"{arch},{size}")
        if arch == "gat":
            g = cfg.gat
            return CANGraphGAT(40, 8, 2, g.hidden, g.layers, g.heads, g.embedding_dim)
        v = cfg.vgae
        return CANGraphVGAE(40, 8, 2, v.hidden_dims, v.latent_dim, v.heads, v.embedding_dim)

    assert count_parameters(build("teacher")) >= 5 * count_parameters(build("student"))


def test_id_mask_hides_whole_windows_only_in_training(batch):
    from kdgat_core.models.gat import mask_window_ids

    torch.manual_seed(0)
    assert torch.equal(mask_window_ids(batch, 0.5, training=False), batch.node_id)
    assert (mask_window_ids(batch, 1.0, training=True) == 0).all()
    masked = mask_window_ids(batch, 0.5, training=True)
    per_window = [masked[batch.batch == g] for g in range(batch.num_graphs)]
    hidden = [bool((w == 0).all()) for w in per_window]
    assert any(hidden) and not all(hidden)
    for g, w in enumerate(per_window):  # a window is either fully hidden or untouched
        assert hidden[g] or torch.equal(w, batch.node_id[batch.batch == g])
