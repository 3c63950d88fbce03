"""The simulated world: customers and terminals on a map, after the handbook of Le Borgne et al.

The population derives only from (seed, size): 5,000 customers and 10,000 terminals at scale 1,
the map growing with the square root of the scale so that densities, terminals in reach and fraud
rates stay the handbook's. Each random draw has its own stream, seeded by (seed, purpose, key...),
so any day can be generated on its own and gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudloop.feeds.drift import Drift

# --- the handbook's population (at scale 1) ---
HANDBOOK_CUSTOMERS = 5_000
HANDBOOK_TERMINALS = 10_000
HANDBOOK_SIDE = 100.0  # the map is [0, side)^2; it grows with sqrt(scale)
REACH_RADIUS = 5.0
MEAN_AMOUNT_RANGE = (5.0, 100.0)
MEAN_TX_PER_DAY_RANGE = (0.0, 4.0)
ID_DIGITS = 7  # C0000123, T0000456, 20180401-0000001 (wider only when the count needs it)


class Stream(IntEnum):
    """Purposes of the random streams; each stream is seeded by (seed, purpose, key...)."""

    CUSTOMERS = 1
    TERMINALS = 2
    TRANSACTIONS = 3
    COMPROMISED_TERMINALS = 4
    COMPROMISED_CUSTOMERS = 5
    CARD_TESTING = 6
    NEW_TERMINALS = 7


def random_stream(seed: int, stream: Stream, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(stream), *key])


def stochastic_round(rng: np.random.Generator, expected: float) -> int:
    """An integer count whose mean is `expected`: fractional scales keep their rates."""
    base = math.floor(expected)
    return base + int(rng.random() < expected - base)


# --- population --------------------------------------------------------------------------------


def _reach_csr(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, side: float, radius: float = REACH_RADIUS
) -> tuple[np.ndarray, np.ndarray]:
    """Terminals within `radius` of each customer as CSR (offsets, indices).

    A grid of cells `radius` wide holds every neighbour of a customer in its 3x3 block of cells;
    with terminals sorted row-major by cell, each of the 3 rows is one contiguous slice, so the
    candidates are ranges expanded with numpy and filtered by distance, a chunk of customers at
    a time to bound memory. Within a customer, terminals are in (cell row, cell column, id) order.
    """
    n_cells = max(1, math.ceil(side / radius))
    cell_xy = np.clip((terminal_xy // radius).astype(np.int64), 0, n_cells - 1)
    cell = cell_xy[:, 1] * n_cells + cell_xy[:, 0]
    order = np.argsort(cell, kind="stable")
    grid = _Grid(
        n_cells=n_cells,
        radius=radius,
        cell_start=np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=n_cells**2))]),
        x=np.ascontiguousarray(terminal_xy[order, 0]),
        y=np.ascontiguousarray(terminal_xy[order, 1]),
        terminal=order.astype(np.int32),
    )
    per_customer = 9 * len(terminal_xy) / (n_cells * n_cells)
    chunk = max(1, int(2_000_000 / max(per_customer, 1.0)))
    pieces = [grid.within(customer_xy[lo : lo + chunk]) for lo in range(0, len(customer_xy), chunk)]
    counts = np.concatenate([[0]] + [c for c, _ in pieces])
    indices = np.concatenate([np.zeros(0, dtype=np.int32)] + [i for _, i in pieces])
    return np.cumsum(counts), indices


@dataclass
class _Grid:
    """Terminals sorted by grid cell (row-major), with each cell's first position."""

    n_cells: int
    radius: float
    cell_start: np.ndarray
    x: np.ndarray
    y: np.ndarray
    terminal: np.ndarray

    def within(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count per customer, terminal indices grouped by customer) within the radius."""
        n = self.n_cells
        cx, cy = np.clip((xy // self.radius).astype(np.int64), 0, n - 1).T
        rows = cy[:, None] + np.array([-1, 0, 1])
        valid = (rows >= 0) & (rows < n)
        rows = np.clip(rows, 0, n - 1)
        first = rows * n + np.maximum(cx - 1, 0)[:, None]
        last = rows * n + np.minimum(cx + 1, n - 1)[:, None]
        starts = self.cell_start[first].ravel()
        lengths = np.where(valid, self.cell_start[last + 1] - self.cell_start[first], 0).ravel()
        pos = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        pos += np.arange(len(pos))
        dx = self.x[pos] - np.repeat(xy[:, 0].repeat(3), lengths)
        dy = self.y[pos] - np.repeat(xy[:, 1].repeat(3), lengths)
        keep = dx * dx + dy * dy <= self.radius * self.radius
        owner = np.repeat(np.arange(len(xy)).repeat(3), lengths)
        return np.bincount(owner[keep], minlength=len(xy)), self.terminal[pos[keep]]


def format_ids(prefix: str, count: int, start: int = 0, width: int = ID_DIGITS) -> pa.Array:
    numbers = pc.cast(pa.array(np.arange(start, start + count, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, width, "0"), "")


def _id_width(count: int) -> int:
    return max(ID_DIGITS, len(str(max(count - 1, 0))))


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(eq=False)
class Population:
    """Customers, terminals and who can reach what; read-only, shared between days and calls.

    `n_base_terminals` are the terminals of the handbook population; a drift may append more
    (a variant population, cached here) but compromises are always drawn among the base ones,
    so that adding a drift never changes the fraud of the days before it.
    """

    seed: int
    scale: float
    side: float
    customer_xy: np.ndarray
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_tx_per_day: np.ndarray
    terminal_xy: np.ndarray
    n_base_terminals: int
    reach_offsets: np.ndarray
    reach_indices: np.ndarray
    _variants: dict = field(default_factory=dict, repr=False)
    _ids: dict = field(default_factory=dict, repr=False)

    @property
    def n_customers(self) -> int:
        return len(self.customer_xy)

    @property
    def n_terminals(self) -> int:
        return len(self.terminal_xy)

    @property
    def reach_counts(self) -> np.ndarray:
        return np.diff(self.reach_offsets)

    def reach(self, customer: int) -> np.ndarray:
        """Terminal indices a customer may use (for tests and inspection)."""
        return self.reach_indices[self.reach_offsets[customer] : self.reach_offsets[customer + 1]]

    def customer_id_array(self) -> pa.Array:
        """`C0000123` for every customer, as one Arrow array to `take` from."""
        if "customers" not in self._ids:
            width = _id_width(self.n_customers)
            self._ids["customers"] = format_ids("C", self.n_customers, width=width)
        return self._ids["customers"]

    def terminal_id_array(self) -> pa.Array:
        """`T0000456` for every terminal; drift terminals keep the base width and count on."""
        if "terminals" not in self._ids:
            width = _id_width(self.n_base_terminals)
            self._ids["terminals"] = format_ids("T", self.n_terminals, width=width)
        return self._ids["terminals"]

    def customer_ids(self, index: np.ndarray | Sequence[int]) -> list[str]:
        return self.customer_id_array().take(pa.array(np.asarray(index))).to_pylist()

    def terminal_ids(self, index: np.ndarray | Sequence[int]) -> list[str]:
        return self.terminal_id_array().take(pa.array(np.asarray(index))).to_pylist()

    def with_new_terminals(self, drifts: tuple[Drift, ...]) -> Population:
        """The population once the `new_terminals` drifts given are in force (cached).

        New terminals are appended in the order of `drifts` (by start date, then spec), so a
        terminal keeps its id on every later day; reach lists are recomputed over all terminals,
        which leaves the lists of customers far from any new terminal unchanged.
        """
        if not drifts:
            return self
        key = tuple(d.spec for d in drifts)
        if key not in self._variants:
            extra = [
                random_stream(self.seed, Stream.NEW_TERMINALS, d.stream_key).uniform(
                    0.0, self.side, size=(int(d.value or 0), 2)
                )
                for d in drifts
            ]
            terminal_xy = np.concatenate([self.terminal_xy, *extra])
            offsets, indices = _reach_csr(self.customer_xy, terminal_xy, self.side)
            self._variants[key] = Population(
                seed=self.seed,
                scale=self.scale,
                side=self.side,
                customer_xy=self.customer_xy,
                mean_amount=self.mean_amount,
                std_amount=self.std_amount,
                mean_tx_per_day=self.mean_tx_per_day,
                terminal_xy=_frozen(terminal_xy),
                n_base_terminals=self.n_base_terminals,
                reach_offsets=_frozen(offsets),
                reach_indices=_frozen(indices),
                _ids={"customers": self.customer_id_array()},
            )
        return self._variants[key]


def _population_size(scale: float, customers: int | None, terminals: int | None) -> tuple[int, int]:
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be a positive number, not {scale!r}")
    n_customers = customers if customers is not None else round(HANDBOOK_CUSTOMERS * scale)
    n_terminals = terminals if terminals is not None else round(HANDBOOK_TERMINALS * scale)
    if n_customers < 1 or n_terminals < 1:
        raise ValueError(f"need at least one customer and one terminal (scale={scale})")
    return int(n_customers), int(n_terminals)


@lru_cache(maxsize=4)
def _build_population(seed: int, scale: float, n_customers: int, n_terminals: int) -> Population:
    side = HANDBOOK_SIDE * math.sqrt(scale)
    rng = random_stream(seed, Stream.CUSTOMERS)
    customer_xy = rng.uniform(0.0, side, size=(n_customers, 2))
    mean_amount = rng.uniform(*MEAN_AMOUNT_RANGE, size=n_customers)
    mean_tx_per_day = rng.uniform(*MEAN_TX_PER_DAY_RANGE, size=n_customers)
    terminal_xy = random_stream(seed, Stream.TERMINALS).uniform(0.0, side, size=(n_terminals, 2))
    offsets, indices = _reach_csr(customer_xy, terminal_xy, side)
    return Population(
        seed=seed,
        scale=scale,
        side=side,
        customer_xy=_frozen(customer_xy),
        mean_amount=_frozen(mean_amount),
        std_amount=_frozen(mean_amount / 2),
        mean_tx_per_day=_frozen(mean_tx_per_day),
        terminal_xy=_frozen(terminal_xy),
        n_base_terminals=n_terminals,
        reach_offsets=_frozen(offsets),
        reach_indices=_frozen(indices),
    )


def make_population(
    seed: int = 42,
    scale: float = 1.0,
    customers: int | None = None,
    terminals: int | None = None,
) -> Population:
    """The handbook population times `scale` (5,000 customers and 10,000 terminals at 1).

    The map side is 100 x sqrt(scale) and the reach radius stays 5, so each customer has ~78
    terminals in reach at any scale. `customers` / `terminals` override the counts on that map.
    Built once per (seed, size) and cached: Dagster runs several partitions in one process.
    """
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    n_customers, n_terminals = _population_size(scale, customers, terminals)
    return _build_population(int(seed), float(scale), n_customers, n_terminals)


def clear_population_cache() -> None:
    """Forget cached populations (benchmarks timing a cold start; freeing memory)."""
    _build_population.cache_clear()
