"""The geo term of a recommender's scores: items placed on a local plane, the score of item j
``-r1 * |x_j - x_here|^2 - r2 * |x_j - x_anchor|^2`` with rates read from the hidden state, linear
in three item features (x, y, |x|^2) so that scoring stays one matrix product (see
``SequentialRecommender``'s ``geo`` option)."""

import torch
import torch.nn.functional as F
from torch import nn

KM_PER_DEGREE = 111.195  # km per degree of latitude (and of longitude at the equator)
GEO_FEATURES = 3  # x, y, |x|^2 on the local plane
INITIAL_GEO_RATE = -2.0  # softplus(-2) ~ 0.13
ANCHOR_GAP_UNIT = 3600.0  # s: the anchor weighs events by exp(a * log1p(gap / 1 h))
MAX_ANCHOR_SHARPNESS = 4.0  # |a| bound, so weights stay within exp(4 * log1p(1e6)) ~ 1e24


class GeoScoring:
    """Mixin of ``SequentialRecommender`` (an ``nn.Module``) for the geo term: its buffers and
    parameters (``geo_frame``, ``item_geo``, ``geo_rates``, ``anchor_sharpness``, registered by
    :meth:`init_geo` on the model itself, so checkpoints keep their keys), the item placement
    and the per-position coefficients.

    Example::

        model = stseq.models.build_model("gru4rec", split.train, geo=True)
        model.set_item_coordinates(split.train.item_coordinates())
    """

    def init_geo(self, num_items, dim):
        """Register the geo term's state for ``num_items`` items and hidden size ``dim``."""
        # frame: latitude and longitude of the origin (degrees), km per unit of the plane
        self.register_buffer("geo_frame", torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
        self.register_buffer("item_geo", torch.zeros(num_items, GEO_FEATURES))  # x, y, |x|^2
        self.geo_rates = nn.Linear(dim, 2)
        nn.init.zeros_(self.geo_rates.weight)
        nn.init.constant_(self.geo_rates.bias, INITIAL_GEO_RATE)
        self.anchor_sharpness = nn.Parameter(torch.zeros(()))

    def set_item_coordinates(self, coordinates):
        """Place the items for the geo term: [N, 2] (latitude, longitude) degrees, NaN rows for
        items without a place (they sit at the centre). The plane is centred on the items'
        mean place and scaled by their spread.

        Example::

            model.set_item_coordinates(train.item_coordinates())
        """
        if not self.geo:
            raise ValueError("this model was built with geo=False")
        coordinates = torch.as_tensor(coordinates, dtype=torch.float64)
        if coordinates.shape != (self.num_items, 2):
            raise ValueError(f"coordinates must have shape [num_items, 2] = [{self.num_items}, "
                             f"2], got {tuple(coordinates.shape)}")
        known = torch.isfinite(coordinates).all(1)
        if not known.any():
            raise ValueError("no item has finite coordinates")
        origin = coordinates[known].mean(0)
        self.geo_frame[:2] = origin
        self.geo_frame[2] = 1.0
        plane = self.project(coordinates[known])
        self.geo_frame[2] = plane.square().sum(1).mean().sqrt().clamp(min=1e-3)
        plane = plane / self.geo_frame[2]
        features = torch.zeros(self.num_items, GEO_FEATURES, dtype=torch.float64)
        features[known] = torch.cat([plane, plane.square().sum(1, keepdim=True)], dim=1)
        self.item_geo.copy_(features)

    def project(self, coordinates):
        """[..., 2] degrees -> [..., 2] float64 position on the model's local plane
        (equirectangular around the items' mean place, in units of their spread)."""
        latitude0, longitude0, unit = self.geo_frame
        coordinates = coordinates.double()
        x = (coordinates[..., 1] - longitude0) * torch.cos(torch.deg2rad(latitude0))
        y = coordinates[..., 0] - latitude0
        return torch.stack([x, y], dim=-1) * (KM_PER_DEGREE / unit)

    def geo_coefficients(self, hidden, batch):
        """[B, L, 3] row coefficients of the item features (x, y, |x|^2) for the geo term."""
        if batch.coordinates is None:
            raise ValueError("this model was built with geo=True but the batch has no "
                             "coordinates")
        here = self.project(batch.coordinates)  # [B, L, 2]
        valid = (torch.arange(here.shape[1], device=here.device)
                 < batch.lengths[:, None]).unsqueeze(-1)  # [B, L, 1]
        sharpness = self.anchor_sharpness.clamp(-MAX_ANCHOR_SHARPNESS, MAX_ANCHOR_SHARPNESS)
        weight = torch.exp(sharpness.double() * torch.log1p(
            batch.time_gaps.double() / ANCHOR_GAP_UNIT)).unsqueeze(-1) * valid  # [B, L, 1]
        anchor = (here * weight).cumsum(1) / weight.cumsum(1).clamp(min=1e-30)  # [B, L, 2]
        rates = F.softplus(self.geo_rates(hidden))  # [B, L, 2]
        near = 2 * (rates[..., :1] * here.to(rates.dtype) + rates[..., 1:] * anchor.to(
            rates.dtype))
        return torch.cat([near, -rates.sum(-1, keepdim=True)], dim=-1)
