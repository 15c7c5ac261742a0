"""Every recommender: shapes, reference-vs-native parity of scores and gradients, overfitting a
tiny data set; the registry, the baselines and bad input."""

import dataclasses

import numpy as np
import pytest
import torch

import stseq
from stseq.data import Interactions, leave_one_out, synthetic, training_batches
from stseq.models import MODELS, FullSoftmax, build_model

TRAINABLE = [name for name, cls in MODELS.items() if cls.trainable]
OPTIONS = {"dim": 32, "max_length": 12, "dropout": 0.0}


@pytest.fixture(scope="module")
def split():
    data = synthetic(num_users=16, num_items=30, min_length=4, max_length=14, seed=3)
    return leave_one_out(data.interactions)


@pytest.fixture(scope="module")
def batch(split):
    return next(iter(training_batches(split.train, batch_size=6, max_length=12, seed=1)))


def twin(name, split, backend, **options):
    torch.manual_seed(0)
    return build_model(name, split.train, **{**OPTIONS, **options, "backend": backend})


@pytest.mark.parametrize("name", TRAINABLE)
def test_shapes_and_gradients(name, split, batch):
    model = twin(name, split, "auto", dropout=0.1)
    hidden = model(batch)
    geo_features = 3 if model.geo else 0  # coefficients of the spatial term
    assert hidden.shape == (*batch.items.shape, OPTIONS["dim"] + geo_features)
    scores = model.score(batch)
    assert scores.shape == (len(batch.users), split.train.num_items)
    assert torch.isfinite(scores).all()
    total, count = model.training_loss(batch, FullSoftmax())
    assert count == int((batch.next_items != batch.pad_item).sum())
    (total / count).backward()
    for parameter_name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, parameter_name
            assert torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("name", TRAINABLE)
def test_reference_parity(name, split, batch):
    """The whole model on the reference twins of its layers gives the same scores and
    gradients as on the default (native / Triton) kernels."""
    fast, slow = twin(name, split, "auto"), twin(name, split, "reference")
    slow.load_state_dict(fast.state_dict())
    torch.testing.assert_close(fast.score(batch), slow.score(batch), rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)  # SVAE samples its latent
    (fast.training_loss(batch, FullSoftmax())[0]).backward()
    torch.manual_seed(1)
    (slow.training_loss(batch, FullSoftmax())[0]).backward()
    grads = dict(slow.named_parameters())
    for parameter_name, parameter in fast.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(parameter.grad, grads[parameter_name].grad, rtol=1e-3,
                                       atol=1e-5, msg=lambda text: f"{parameter_name}: {text}")


def tiny_sequences(users=6, items=12, length=10, seed=0):
    """Each user repeats a fixed random walk over a few items, an hour apart."""
    rng = np.random.default_rng(seed)
    sequences = [rng.permutation(items)[:length] for _ in range(users)]
    times = [1_700_000_000 + 3600 * np.arange(length) for _ in range(users)]
    return Interactions.from_sequences(sequences, times, num_items=items)


@pytest.mark.parametrize("name", TRAINABLE)
def test_overfits_a_tiny_data_set(name):
    train = tiny_sequences()
    torch.manual_seed(0)
    options = {"beta": 0.0} if name == "svae" else {}
    # attention runs its reference path on CPU outside tests; here "auto" would pick Triton's
    # interpreter, which is slow
    backend = "reference" if name in ("sasrec", "timesasrec") else "auto"
    model = build_model(name, train, dim=32, max_length=10, dropout=0.0, backend=backend,
                        **options)
    batch = next(iter(training_batches(train, batch_size=6, max_length=10, shuffle=False)))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [35], 0.1)
    for _ in range(50):
        optimizer.zero_grad()
        total, count = model.training_loss(batch, FullSoftmax())
        (total / count).backward()
        optimizer.step()
        schedule.step()
    model.eval()
    mask = batch.next_items != batch.pad_item
    with torch.no_grad():  # what the loss fitted: the mixture, each own transition left out
        rows, targets = model(batch)[mask], batch.next_items[mask]
        scores = model.logits(rows)
        mixture = model.transition_mixture(rows, batch.items[mask], targets)
        predicted = (scores if mixture is None else mixture.log_probs(scores)).argmax(-1)
    accuracy = (predicted == targets).float().mean()
    assert accuracy > 0.9, f"{name} fits only {accuracy:.2f} of its training transitions"


def test_baselines_wrap_the_eval_scorers(split, batch):
    for name, scorer in (("most-popular", stseq.eval.MostPopular),
                         ("markov", stseq.eval.MarkovChain)):
        model = build_model(name, split.train)
        with pytest.raises(ValueError, match="fitted first"):
            model.score(batch)
        model.fit(split.train)
        torch.testing.assert_close(model.score(batch), scorer(split.train)(batch))
    with pytest.raises(ValueError, match="takes no options"):
        build_model("markov", split.train, dim=8)


def test_registry_and_bad_input(split, batch):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", split.train)
    with pytest.raises(ValueError, match="bad options for model 'gru4rec'"):
        build_model("gru4rec", split.train, num_heads=2)
    model = build_model("gru4rec", split.train, dim=8, max_length=4)
    assert model.spec == {"name": "gru4rec", "options": {"dim": 8, "max_length": 4}}
    with pytest.raises(ValueError, match="max_length=4"):
        model(batch)
    other = build_model("gru4rec", tiny_sequences(), dim=8, max_length=12)
    with pytest.raises(ValueError, match="data and model do not match"):
        other(batch)
    with pytest.raises(ValueError, match="backend must be one of"):
        build_model("sasrec", split.train, backend="fast")
    assert build_model("timesasrec", split.train, dim=32).geo  # synthetic data has coordinates
    with pytest.raises(ValueError, match="needs data with coordinates"):
        build_model("timesasrec", tiny_sequences(), dim=32, geo=True)
    assert not build_model("timesasrec", tiny_sequences(), dim=32).geo
    with pytest.raises(ValueError, match="the batch has no coordinates"):
        twin("timesasrec", split, "auto")(dataclasses.replace(batch, coordinates=None))


def test_time_aware_models_read_the_query_time(split, batch):
    """Moving only the query time changes a time-aware model's scores and not SASRec's."""
    later = dataclasses.replace(batch, next_timestamps=batch.next_timestamps + 6 * 3600)
    for name, changes in (("timesasrec", True), ("srgnn", True), ("sasrec", False)):
        model = twin(name, split, "auto").eval()
        with torch.no_grad():
            moved = not torch.allclose(model.score(batch), model.score(later))
        assert moved == changes, name


def test_geo_term_is_a_squared_distance_to_here_and_the_centroid(split, batch):
    model = twin("timesasrec", split, "auto").eval()
    assert model.geo
    with torch.no_grad():
        model.geo_rates.bias.copy_(torch.tensor([0.3, -0.5]))
        with_geo = model.logits(model(batch))  # [B, L, N]
        model.item_geo.zero_()
        without = model.logits(model(batch))
    rates = torch.nn.functional.softplus(torch.tensor([0.3, -0.5], dtype=torch.float64))
    latitude0, longitude0, unit = model.geo_frame.tolist()

    def plane(latlon):  # independent equirectangular projection, in the model's units
        latlon = torch.as_tensor(latlon, dtype=torch.float64)
        x = (latlon[..., 1] - longitude0) * np.cos(np.radians(latitude0)) * 111.195 / unit
        return torch.stack([x, (latlon[..., 0] - latitude0) * 111.195 / unit], -1)

    items = plane(split.train.item_coordinates())  # [N, 2]
    row, position = 1, int(batch.lengths[1]) - 1
    here = plane(batch.coordinates[row, position])
    centroid = plane(batch.coordinates[row, :position + 1]).mean(0)
    expected = -(rates[0] * (items - here).square().sum(1)
                 + rates[1] * (items - centroid).square().sum(1))
    actual = (with_geo - without)[row, position].double()
    placed = torch.isfinite(expected)  # items without training events have no place
    assert placed.sum() > 20 and (actual[~placed] == 0).all()
    actual, expected = actual[placed], expected[placed]
    # equal up to a constant per row (softmax and ranking ignore it)
    torch.testing.assert_close(actual - actual[0], expected - expected[0], rtol=1e-4, atol=1e-4)


def _mixture(logits, table, w, beta):
    """log((1 - w) softmax(logits) + w table / (row total + beta)), the softmax alone on rows
    whose table is empty."""
    totals = table.sum(1, keepdim=True)
    p = torch.softmax(logits, 1)
    return torch.where(totals > 0, (1 - w) * p + w * table / (totals + beta), p).log()


def test_transition_prior_is_the_gated_mixture_with_the_target_left_out(split, batch):
    model = twin("gru4rec", split, "auto").eval()
    prior = model.transition_prior
    counts = np.zeros((split.train.num_items + 1, split.train.num_items))  # row N: padding
    for user in range(split.train.num_users):
        items = split.train.items[split.train.offsets[user]:split.train.offsets[user + 1]]
        np.add.at(counts, (items[:-1], items[1:]), 1)
    assert counts.sum() > 20 and (counts > 1).any()
    with torch.no_grad():
        prior.gate.bias.fill_(0.4)
        prior.smoothing.fill_(-0.3)
    w = torch.sigmoid(torch.tensor(0.4))
    beta = torch.nn.functional.softplus(torch.tensor(-0.3))
    previous = batch.items.flatten()  # [M], padding included
    # targets: the row's seen transitions where it has any (its count then drops by one)
    table = torch.as_tensor(counts, dtype=torch.float32)[previous]  # [M, N]
    targets = torch.where(table.sum(1) > 0, table.argmax(1),
                          torch.randint(0, split.train.num_items, previous.shape))
    assert (table.sum(1) == 0).any() and (table.sum(1) > 0).any()
    hidden = torch.randn(len(previous), OPTIONS["dim"])
    logits = torch.randn(table.shape)
    with torch.no_grad():
        torch.testing.assert_close(prior.mixture(hidden, previous).log_probs(logits),
                                   _mixture(logits, table, w, beta))
        left_out = table.clone()
        left_out[torch.arange(len(targets)), targets] -= 1
        left_out = left_out.clamp(min=0)
        mixture = prior.mixture(hidden, previous, targets)
        torch.testing.assert_close(mixture.log_probs(logits), _mixture(logits, left_out, w, beta))
        # over a candidate set: the target, other items, and a left-out candidate (-1, -inf)
        columns = torch.randint(0, split.train.num_items, (len(previous), 9))
        columns[:, 0] = targets
        columns[:, 8] = -1
        chosen = logits.gather(1, columns.clamp(min=0)).index_fill(1, torch.tensor([8]),
                                                                   float("-inf"))
        q = left_out.gather(1, columns.clamp(min=0)).index_fill(1, torch.tensor([8]), 0.0)
        totals = left_out.sum(1, keepdim=True)
        p = torch.softmax(chosen, 1)
        expected = torch.where(totals > 0, (1 - w) * p + w * q / (totals + beta), p).log()
        torch.testing.assert_close(mixture.log_probs(chosen, columns), expected)
    # the gate and the smoothing learn through the mixture, with finite gradients everywhere
    loss = -prior.mixture(hidden, previous, targets).log_probs(
        logits.requires_grad_()).gather(1, targets[:, None]).sum()
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert prior.gate.bias.grad.abs() > 0 and prior.smoothing.grad.abs() > 0
    # evaluation scores are the mixture after each row's last item
    last = batch.last_items
    with torch.no_grad():
        plain = model.logits(model(batch).gather(
            1, (batch.lengths - 1).view(-1, 1, 1).expand(-1, 1, OPTIONS["dim"]))[:, 0])
        torch.testing.assert_close(model.score(batch), _mixture(
            plain, torch.as_tensor(counts, dtype=torch.float32)[last], w, beta))
    # a checkpoint restores the table into a model built without data
    bare = MODELS["gru4rec"](split.train.num_items, **OPTIONS)
    bare.load_state_dict(model.state_dict())
    torch.testing.assert_close(bare.eval().score(batch), model.score(batch))
    off = twin("gru4rec", split, "auto", transition_prior=False)
    assert off.transition_prior is None
    with pytest.raises(ValueError, match="transition_prior=False"):
        off.set_transitions(split.train)
