"""Card-transaction simulator after the "Reproducible Machine Learning for Credit Card Fraud
Detection" handbook (Le Borgne et al.), writing hourly feed files and daily label files.

No real feed can be downloaded, so every stage downstream is exercised on this data; the model
can then be compared with the handbook's published tables. Three properties matter most:

- *Reproducible*: the population derives only from (seed, size) and each calendar day draws from
  its own random streams, so the same seed gives byte-identical files, and simulating days 1-10
  then 11-20 gives the same files as simulating 1-20 at once (compromises that started before
  the first requested day are replayed from their own streams).
- *Scalable*: everything is vectorised with numpy/pyarrow (no loop per customer or transaction);
  ``scale=100`` gives ~1 M transactions a day on a map 10x wider, so densities, terminals in
  reach and fraud rates stay the handbook's.
- *Honest about time*: labels land ``label_delay`` after their transaction, grouped by the day
  they became known, and the fraud scenario stays in memory only (a feed would not know it).
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import IntEnum
from functools import cache, lru_cache
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from fraudloop.drift import DRIFT_GRAMMAR, Drift, parse_drift, parse_drifts
from fraudloop.schema import HOUR_KEY_FORMAT, hour_key, hour_landing_prefix, hour_start
from fraudloop.storage import ObjectStore

__all__ = [
    "DRIFT_GRAMMAR",
    "DayTransactions",
    "Drift",
    "Population",
    "SimulationSummary",
    "clear_population_cache",
    "compromised_customers",
    "compromised_terminals",
    "generate_day",
    "generate_transactions",
    "make_population",
    "parse_corrupt",
    "parse_drift",
    "simulate",
]

# --- the handbook's specification (at scale 1) -------------------------------------------------
HANDBOOK_CUSTOMERS = 5_000
HANDBOOK_TERMINALS = 10_000
HANDBOOK_SIDE = 100.0  # the map is [0, side)^2; it grows with sqrt(scale)
REACH_RADIUS = 5.0
MEAN_AMOUNT_RANGE = (5.0, 100.0)
MEAN_TX_PER_DAY_RANGE = (0.0, 4.0)
TIME_OF_DAY_MEAN_S = 43_200.0
TIME_OF_DAY_STD_S = 20_000.0
DAY_S = 86_400
FRAUD_AMOUNT_CENTS = 22_000  # scenario 1: amount > 220
TERMINALS_COMPROMISED_PER_DAY = 2.0  # per HANDBOOK_TERMINALS
TERMINAL_COMPROMISE_DAYS = 28
CUSTOMERS_COMPROMISED_PER_DAY = 3.0  # per HANDBOOK_CUSTOMERS
CUSTOMER_COMPROMISE_DAYS = 14
CUSTOMER_FRAUD_SHARE = 1 / 3
CUSTOMER_FRAUD_MULTIPLIER = 5

# --- drift: card testing -----------------------------------------------------------------------
CARD_TESTING_CARDS_PER_DAY = 3.0  # per HANDBOOK_CUSTOMERS, unless the spec gives a number
CARD_TESTING_BURST = (10, 30)  # transactions per card, inclusive
CARD_TESTING_GAP_S = (2, 30)  # seconds between two attempts, inclusive
CARD_TESTING_TERMINALS = (1, 3)  # terminals a card is tested at, inclusive
CARD_TESTING_CENTS = (50, 500)  # 0.50 .. 5.00

GENUINE, SCENARIO_AMOUNT, SCENARIO_TERMINAL, SCENARIO_CUSTOMER, SCENARIO_CARD_TESTING = range(5)
SCENARIOS = {
    GENUINE: "genuine",
    SCENARIO_AMOUNT: "amount over 220",
    SCENARIO_TERMINAL: "compromised terminal",
    SCENARIO_CUSTOMER: "compromised customer",
    SCENARIO_CARD_TESTING: "card testing (drift)",
}

FORMATS = ("csv", "parquet")
TRANSACTION_FILE = "part-0000"
LABEL_FILE = "labels"
TRANSACTION_HEADER = b"transaction_id,tx_datetime,customer_id,terminal_id,amount\n"
LABEL_HEADER = b"transaction_id,is_fraud,known_at\n"
PARQUET_COMPRESSION = "zstd"
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


def _rng(seed: int, stream: Stream, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(stream), *key])


def _stochastic_round(rng: np.random.Generator, expected: float) -> int:
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


def _format_ids(prefix: str, count: int, start: int = 0, width: int = ID_DIGITS) -> pa.Array:
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
            self._ids["customers"] = _format_ids("C", self.n_customers, width=width)
        return self._ids["customers"]

    def terminal_id_array(self) -> pa.Array:
        """`T0000456` for every terminal; drift terminals keep the base width and count on."""
        if "terminals" not in self._ids:
            width = _id_width(self.n_base_terminals)
            self._ids["terminals"] = _format_ids("T", self.n_terminals, width=width)
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
                _rng(self.seed, Stream.NEW_TERMINALS, d.stream_key).uniform(
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
    rng = _rng(seed, Stream.CUSTOMERS)
    customer_xy = rng.uniform(0.0, side, size=(n_customers, 2))
    mean_amount = rng.uniform(*MEAN_AMOUNT_RANGE, size=n_customers)
    mean_tx_per_day = rng.uniform(*MEAN_TX_PER_DAY_RANGE, size=n_customers)
    terminal_xy = _rng(seed, Stream.TERMINALS).uniform(0.0, side, size=(n_terminals, 2))
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


# --- one day of transactions -------------------------------------------------------------------


def _daily_draw(seed: int, stream: Stream, day: date, size: int, per_day: float) -> np.ndarray:
    rng = _rng(seed, stream, day.toordinal())
    count = min(_stochastic_round(rng, per_day), size)
    return rng.choice(size, size=count, replace=False)


def _compromised(
    seed: int, stream: Stream, day: date, window: int, size: int, per_day: float
) -> np.ndarray:
    """Union of the draws of the `window` days up to `day`: each lasts `window` days."""
    draws = [
        _daily_draw(seed, stream, day - timedelta(days=back), size, per_day)
        for back in range(window)
    ]
    return np.unique(np.concatenate(draws))


def compromised_terminals(population: Population, day: date) -> np.ndarray:
    """Terminal indices compromised on `day` (scenario 2): 2 a day per 10,000, for 28 days."""
    per_day = TERMINALS_COMPROMISED_PER_DAY * population.n_base_terminals / HANDBOOK_TERMINALS
    return _compromised(
        population.seed,
        Stream.COMPROMISED_TERMINALS,
        day,
        TERMINAL_COMPROMISE_DAYS,
        population.n_base_terminals,
        per_day,
    )


def compromised_customers(population: Population, day: date) -> np.ndarray:
    """Customer indices compromised on `day` (scenario 3): 3 a day per 5,000, for 14 days."""
    per_day = CUSTOMERS_COMPROMISED_PER_DAY * population.n_customers / HANDBOOK_CUSTOMERS
    return _compromised(
        population.seed,
        Stream.COMPROMISED_CUSTOMERS,
        day,
        CUSTOMER_COMPROMISE_DAYS,
        population.n_customers,
        per_day,
    )


@dataclass
class _Batch:
    """Unsorted transactions of one day as integer arrays (cents, second of day, indices)."""

    FIELDS: ClassVar[tuple[str, ...]] = ("seconds", "customer", "terminal", "cents", "scenario")
    seconds: np.ndarray
    customer: np.ndarray
    terminal: np.ndarray
    cents: np.ndarray
    scenario: np.ndarray

    @staticmethod
    def concat(batches: Sequence[_Batch]) -> _Batch:
        return _Batch(
            *(np.concatenate([getattr(b, name) for b in batches]) for name in _Batch.FIELDS)
        )

    def take(self, index: np.ndarray) -> _Batch:
        return _Batch(*(getattr(self, name)[index] for name in _Batch.FIELDS))


def _genuine(population: Population, day: date, amount_factor: float) -> tuple[_Batch, np.ndarray]:
    """The handbook's daily draws, plus one uniform per transaction for scenario 3.

    Every customer's transactions are drawn even when they reach no terminal and dropped
    afterwards, so new terminals (a drift) do not shift the draws of anyone else.
    """
    pop = population
    rng = _rng(pop.seed, Stream.TRANSACTIONS, day.toordinal())
    customer = np.repeat(np.arange(pop.n_customers), rng.poisson(pop.mean_tx_per_day))
    n = len(customer)
    seconds = np.floor(rng.normal(TIME_OF_DAY_MEAN_S, TIME_OF_DAY_STD_S, n))
    mean = pop.mean_amount[customer]
    amount = rng.normal(mean, pop.std_amount[customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0.0, 2 * mean[negative])
    pick = rng.random(n)
    fraud_draw = rng.random(n)

    counts = pop.reach_counts[customer]
    keep = (seconds >= 0) & (seconds < DAY_S) & (counts > 0)
    customer, counts, pick = customer[keep], counts[keep], pick[keep]
    slot = pop.reach_offsets[customer] + np.floor(pick * counts).astype(np.int64)
    cents = np.maximum(np.rint(amount[keep] * amount_factor * 100), 1).astype(np.int64)
    batch = _Batch(
        seconds=seconds[keep].astype(np.int32),
        customer=customer,
        terminal=pop.reach_indices[slot].astype(np.int64),
        cents=cents,
        scenario=np.zeros(len(customer), dtype=np.int8),
    )
    return batch, fraud_draw[keep]


def _apply_handbook_fraud(population: Population, day: date, batch: _Batch, draw: np.ndarray):
    """Scenarios 1, 2, 3 in the handbook's order (a later scenario relabels an earlier one)."""
    batch.scenario[batch.cents > FRAUD_AMOUNT_CENTS] = SCENARIO_AMOUNT
    at_terminal = np.isin(batch.terminal, compromised_terminals(population, day))
    batch.scenario[at_terminal] = SCENARIO_TERMINAL
    by_customer = np.isin(batch.customer, compromised_customers(population, day))
    hit = by_customer & (draw < CUSTOMER_FRAUD_SHARE)
    batch.cents[hit] *= CUSTOMER_FRAUD_MULTIPLIER
    batch.scenario[hit] = SCENARIO_CUSTOMER


def _card_testing(population: Population, day: date, drift: Drift) -> _Batch:
    """Bursts of small amounts on a few stolen cards, seconds apart, at 1-3 terminals anywhere."""
    pop = population
    rng = _rng(pop.seed, Stream.CARD_TESTING, drift.stream_key, day.toordinal())
    per_day = drift.value or CARD_TESTING_CARDS_PER_DAY * pop.n_customers / HANDBOOK_CUSTOMERS
    n_cards = min(_stochastic_round(rng, per_day), pop.n_customers)
    cards = rng.choice(pop.n_customers, size=n_cards, replace=False)
    sizes = rng.integers(CARD_TESTING_BURST[0], CARD_TESTING_BURST[1] + 1, size=n_cards)
    longest = CARD_TESTING_BURST[1] * CARD_TESTING_GAP_S[1]
    first_second = rng.integers(0, DAY_S - longest, size=n_cards)
    pool = rng.integers(0, pop.n_terminals, size=(n_cards, CARD_TESTING_TERMINALS[1]))
    n_pool = rng.integers(CARD_TESTING_TERMINALS[0], CARD_TESTING_TERMINALS[1] + 1, size=n_cards)

    owner = np.repeat(np.arange(n_cards), sizes)
    total = len(owner)
    gaps = rng.integers(CARD_TESTING_GAP_S[0], CARD_TESTING_GAP_S[1] + 1, size=total)
    burst_start = np.cumsum(sizes) - sizes
    gaps[burst_start] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[burst_start], sizes)
    choice = np.floor(rng.random(total) * n_pool[owner]).astype(np.int64)
    cents = rng.integers(CARD_TESTING_CENTS[0], CARD_TESTING_CENTS[1] + 1, size=total)
    return _Batch(
        seconds=(first_second[owner] + elapsed).astype(np.int32),
        customer=cards[owner].astype(np.int64),
        terminal=pool[owner, choice].astype(np.int64),
        cents=cents.astype(np.int64),
        scenario=np.full(total, SCENARIO_CARD_TESTING, dtype=np.int8),
    )


@cache
def _time_of_day_strings() -> pa.Array:
    """`HH:MM:SS` for every second of a day: formatting becomes an Arrow `take`."""
    return pa.array(
        [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(DAY_S)], pa.string()
    )


@dataclass
class DayTransactions:
    """One calendar day of transactions sorted by time, as arrays ready to format.

    `population` is the one in force that day (it may carry drift terminals). The scenario is
    kept here, in memory only: the landed files, like a real feed, do not carry it.
    """

    day: date
    population: Population
    seconds: np.ndarray  # second of the UTC day, int32
    customer: np.ndarray  # customer index
    terminal: np.ndarray  # terminal index
    cents: np.ndarray  # amount in cents, int64
    scenario: np.ndarray  # 0 genuine, 1-3 handbook scenarios, 4 card-testing drift

    def __len__(self) -> int:
        return len(self.seconds)

    @property
    def is_fraud(self) -> np.ndarray:
        return (self.scenario > 0).astype(np.int8)

    def transaction_ids(self) -> pa.Array:
        """`YYYYMMDD-0000000`: the rank of the transaction in its day, so stable across runs."""
        width = max(ID_DIGITS, len(str(max(len(self) - 1, 0))))
        return _format_ids(f"{self.day:%Y%m%d}-", len(self), width=width)

    def datetime_strings(self) -> pa.Array:
        """ISO 8601 UTC at second resolution, e.g. `2018-04-01T05:12:33Z`."""
        hms = _time_of_day_strings().take(pa.array(self.seconds))
        return pc.binary_join_element_wise(f"{self.day.isoformat()}T", hms, "Z", "")

    def amount_strings(self) -> pa.Array:
        """Exactly two decimals from integer cents, so no float formatting is involved."""
        padded = pc.utf8_lpad(pc.cast(pa.array(self.cents), pa.string()), 3, "0")
        whole = pc.utf8_slice_codeunits(padded, 0, -2)
        return pc.binary_join_element_wise(whole, pc.utf8_slice_codeunits(padded, -2), ".")

    def timestamps(self) -> np.ndarray:
        """`datetime64[s]` (naive, UTC) of every transaction."""
        return np.datetime64(self.day, "s") + self.seconds.astype("timedelta64[s]")

    def to_frame(self) -> pd.DataFrame:
        """Canonical transaction columns plus `is_fraud` and `scenario` (for analysis)."""
        tx_datetime = pd.DatetimeIndex(self.timestamps().astype("datetime64[ns]"), tz="UTC")
        pop = self.population
        return pd.DataFrame(
            {
                "transaction_id": _string_series(self.transaction_ids()),
                "tx_datetime": tx_datetime,
                "customer_id": _string_series(pop.customer_id_array().take(self.customer)),
                "terminal_id": _string_series(pop.terminal_id_array().take(self.terminal)),
                "amount": self.cents / 100,
                "is_fraud": self.is_fraud,
                "scenario": self.scenario,
            }
        )


def _string_series(values: pa.Array) -> pd.arrays.ArrowStringArray:
    return pd.arrays.ArrowStringArray(values)


def _amount_factor(day: date, drifts: Iterable[Drift]) -> float:
    factor = 1.0
    for drift in drifts:
        if drift.kind == "amount_shift" and drift.active(day):
            factor *= float(drift.value)
    return factor


def _population_on(population: Population, day: date, drifts: tuple[Drift, ...]) -> Population:
    opened = tuple(d for d in drifts if d.kind == "new_terminals" and d.active(day))
    return population.with_new_terminals(opened)


def generate_transactions(
    population: Population, day: date, drift: Iterable[str | Drift] = ()
) -> DayTransactions:
    """One day's transactions (handbook + active drifts) as sorted arrays; no I/O.

    Amount shifts apply before the fraud rules, so "amount > 220 is fraud" holds on every day;
    card-testing transactions are appended afterwards and keep scenario 4.
    """
    drifts = parse_drifts(drift)
    pop = _population_on(population, day, drifts)
    batch, draw = _genuine(pop, day, _amount_factor(day, drifts))
    _apply_handbook_fraud(pop, day, batch, draw)
    extra = [
        _card_testing(pop, day, d) for d in drifts if d.kind == "card_testing" and d.active(day)
    ]
    batch = _Batch.concat([batch, *extra]) if extra else batch
    batch = batch.take(np.argsort(batch.seconds, kind="stable"))
    return DayTransactions(
        day,
        pop,
        batch.seconds,
        batch.customer,
        batch.terminal,
        batch.cents,
        batch.scenario,
    )


def generate_day(
    population: Population, day: date, *, drift: Iterable[str | Drift] = ()
) -> pd.DataFrame:
    """One day as a DataFrame with the canonical transaction columns, `is_fraud`, `scenario`.

    Same data, ids included, as `simulate` lands for that day and population, without a store.
    """
    return generate_transactions(population, day, drift).to_frame()


# --- files -------------------------------------------------------------------------------------


def _csv_lines(columns: Sequence[pa.Array]) -> pa.Array:
    """One `a,b,c\\n` string per row; the rows of a slice are then contiguous bytes in the
    array's data buffer, so a file is a single slice instead of a per-row join."""
    lines = pc.binary_join_element_wise(*columns, ",")
    return pc.binary_join_element_wise(lines, "", "\n")


def _slice_bytes(lines: pa.Array, start: int, stop: int) -> bytes:
    offset_type = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    _, offsets_buffer, data = lines.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[lines.offset :]
    return data[int(offsets[start]) : int(offsets[stop])].to_pybytes() if stop > start else b""


def _parquet_bytes(table: pa.Table) -> bytes:
    """Deterministic Parquet: no pandas index or metadata, fixed compression and layout."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, write_statistics=True)
    return sink.getvalue().to_pybytes()


def _utc_timestamps(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype("datetime64[us]"), pa.timestamp("us", tz="UTC"))


class _HourFiles:
    """Formats one day's hourly files; CSV lines are built once for the whole day and sliced."""

    def __init__(self, txs: DayTransactions):
        self.txs = txs
        self.bounds = np.searchsorted(txs.seconds, np.arange(25) * 3600)
        self.ids = txs.transaction_ids()
        self.customer_ids = txs.population.customer_id_array().take(pa.array(txs.customer))
        self.terminal_ids = txs.population.terminal_id_array().take(pa.array(txs.terminal))
        self._lines: pa.Array | None = None

    def rows(self, hour: int) -> tuple[int, int]:
        return int(self.bounds[hour]), int(self.bounds[hour + 1])

    def csv(self, hour: int) -> bytes:
        if self._lines is None:
            columns = [self.ids, self.txs.datetime_strings(), self.customer_ids]
            columns += [self.terminal_ids, self.txs.amount_strings()]
            self._lines = _csv_lines(columns)
        return TRANSACTION_HEADER + _slice_bytes(self._lines, *self.rows(hour))

    def parquet(self, hour: int) -> bytes:
        start, stop = self.rows(hour)
        table = pa.table(
            {
                "transaction_id": self.ids.slice(start, stop - start),
                "tx_datetime": _utc_timestamps(self.txs.timestamps()[start:stop]),
                "customer_id": self.customer_ids.slice(start, stop - start),
                "terminal_id": self.terminal_ids.slice(start, stop - start),
                "amount": pa.array(self.txs.cents[start:stop] / 100),
            }
        )
        return _parquet_bytes(table)


@dataclass
class _LabelChunk:
    ids: pa.Array
    is_fraud: np.ndarray
    second_of_day: np.ndarray  # of known_at, in the label day


def _label_chunks(
    txs: DayTransactions, ids: pa.Array, delay_s: int
) -> Iterable[tuple[int, _LabelChunk]]:
    """Split a day's labels by the UTC day (ordinal) of known_at = tx_datetime + delay."""
    known = txs.seconds.astype(np.int64) + delay_s
    shift = known // DAY_S  # non-decreasing: transactions are sorted by time
    is_fraud = txs.is_fraud
    for value in np.unique(shift):
        start, stop = np.searchsorted(shift, [value, value + 1])
        chunk = _LabelChunk(
            ids.slice(start, stop - start),
            is_fraud[start:stop],
            (known[start:stop] - value * DAY_S).astype(np.int32),
        )
        yield txs.day.toordinal() + int(value), chunk


def _label_file(day: date, chunks: Sequence[_LabelChunk], fmt: str) -> bytes:
    ids = pa.concat_arrays([c.ids for c in chunks])
    is_fraud = np.concatenate([c.is_fraud for c in chunks])
    seconds = np.concatenate([c.second_of_day for c in chunks])
    if fmt == "parquet":
        known = np.datetime64(day, "s") + seconds.astype("timedelta64[s]")
        table = pa.table(
            {
                "transaction_id": ids,
                "is_fraud": pa.array(is_fraud),
                "known_at": _utc_timestamps(known),
            }
        )
        return _parquet_bytes(table)
    hms = _time_of_day_strings().take(pa.array(seconds))
    known_at = pc.binary_join_element_wise(f"{day.isoformat()}T", hms, "Z", "")
    lines = _csv_lines([ids, pc.cast(pa.array(is_fraud), pa.string()), known_at])
    return LABEL_HEADER + _slice_bytes(lines, 0, len(lines))


def transaction_key(hour: str, fmt: str = "csv", name: str = TRANSACTION_FILE) -> str:
    """`landing/transactions/<YYYY-MM-DD>/<HH>/part-0000.<fmt>` for an hourly partition key."""
    return f"{hour_landing_prefix(hour)}{name}.{fmt}"


def label_key(day: date, fmt: str = "csv") -> str:
    """`landing/labels/<YYYY-MM-DD>/labels.<fmt>`."""
    return f"landing/labels/{day.isoformat()}/{LABEL_FILE}.{fmt}"


# --- corrupted files ---------------------------------------------------------------------------


def parse_corrupt(spec: str | tuple[str, str]) -> tuple[str, str]:
    """`KIND@YYYY-MM-DDTHH` (or a `(kind, hour)` pair) -> `(kind, "YYYY-MM-DD-HH:00")`.

    The hour may also be given as a partition key (`2018-04-01-05:00`). The kind is checked by
    `fraudloop.corrupt` when the file is produced.
    """
    if isinstance(spec, tuple):
        kind, hour = spec
    else:
        kind, sep, hour = spec.partition("@")
        if not sep:
            raise ValueError(f"invalid corruption {spec!r}: expected KIND@YYYY-MM-DDTHH")
    kind, hour = kind.strip(), hour.strip()
    for fmt in ("%Y-%m-%dT%H", HOUR_KEY_FORMAT, "%Y-%m-%dT%H:%M"):
        try:
            parsed = datetime.strptime(hour, fmt)
        except ValueError:
            continue
        if kind and parsed.minute == 0:
            return kind, parsed.strftime(HOUR_KEY_FORMAT)
    raise ValueError(f"invalid corruption {spec!r}: expected KIND@YYYY-MM-DDTHH")


def _corrupted_file(kind: str, hour: str, good_csv: bytes) -> tuple[str, bytes]:
    """The broken variant of an hour's file; the name keeps `part-0000` plus the kind's suffix."""
    from fraudloop.corrupt import corrupt_file  # lazy: only corruption runs need it

    suffix, data = corrupt_file(kind, good_csv, hour_start(hour))
    return f"{hour_landing_prefix(hour)}{TRANSACTION_FILE}{suffix}", data


# --- the simulation ----------------------------------------------------------------------------


@dataclass
class SimulationSummary:
    """What a `simulate` call landed; `frame` holds every simulated transaction with its
    scenario when asked for (`keep_frame=True`), for tests and benchmarks."""

    start: date
    days: int
    transactions: int = 0
    frauds: int = 0
    transaction_files: int = 0
    label_files: int = 0
    scenario_counts: dict[int, int] = field(default_factory=lambda: dict.fromkeys(SCENARIOS, 0))
    seconds: float = 0.0
    keys: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def fraud_rate(self) -> float:
        return self.frauds / self.transactions if self.transactions else 0.0

    @property
    def transactions_per_second(self) -> float:
        return self.transactions / self.seconds if self.seconds else 0.0

    @property
    def files_written(self) -> int:
        return self.transaction_files + self.label_files

    def as_dict(self) -> dict:
        """Plain values, e.g. for Dagster metadata or a JSON report."""
        return {
            "start": self.start.isoformat(),
            "days": self.days,
            "transactions": self.transactions,
            "frauds": self.frauds,
            "fraud_rate": self.fraud_rate,
            "transaction_files": self.transaction_files,
            "label_files": self.label_files,
            "scenario_counts": {SCENARIOS[k]: v for k, v in self.scenario_counts.items()},
            "seconds": round(self.seconds, 3),
            "transactions_per_second": round(self.transactions_per_second, 1),
        }


def _delay_seconds(label_delay: timedelta) -> int:
    seconds = label_delay.total_seconds()
    if seconds < 0 or seconds != int(seconds):
        raise ValueError(
            f"label_delay must be a non-negative whole number of seconds: {label_delay}"
        )
    return int(seconds)


def _corruptions(corrupt: Iterable, first: date, last: date) -> dict[str, str]:
    by_hour = {}
    for item in corrupt:
        kind, hour = parse_corrupt(item)
        if not first <= hour_start(hour).date() <= last:
            raise ValueError(
                f"corruption hour {hour} is outside the simulated days {first}..{last}"
            )
        by_hour[hour] = kind
    return by_hour


class _Run:
    """State of one `simulate` call: writes a day's files and the label days as they complete."""

    def __init__(self, store, fmt, delay_s, label_days, corrupt, keep_frame, summary):
        self.store: ObjectStore = store
        self.fmt = fmt
        self.delay_s = delay_s
        self.first_label, self.last_label = label_days
        self.corrupt = corrupt
        self.keep_frame = keep_frame
        self.summary: SimulationSummary = summary
        self.pending: dict[int, list[_LabelChunk]] = defaultdict(list)
        self.frames: list[pd.DataFrame] = []

    def put(self, key: str, data: bytes) -> None:
        self.store.put_bytes(key, data)
        self.summary.keys.append(key)
        if key.startswith("landing/transactions/"):
            self.summary.transaction_files += 1
        else:
            self.summary.label_files += 1

    def land_transactions(self, txs: DayTransactions) -> pa.Array:
        """Write the day's hourly files (hours without transactions get none); return the ids."""
        files = _HourFiles(txs)
        for hour in range(24):
            key = hour_key(datetime(txs.day.year, txs.day.month, txs.day.day, hour))
            start, stop = files.rows(hour)
            if key in self.corrupt:
                self.put(*_corrupted_file(self.corrupt[key], key, files.csv(hour)))
            elif stop > start:
                data = files.parquet(hour) if self.fmt == "parquet" else files.csv(hour)
                self.put(transaction_key(key, self.fmt), data)
        self.count(txs)
        return files.ids

    def count(self, txs: DayTransactions) -> None:
        s = self.summary
        s.transactions += len(txs)
        s.frauds += int((txs.scenario > 0).sum())
        for scenario, n in zip(*np.unique(txs.scenario, return_counts=True), strict=True):
            s.scenario_counts[int(scenario)] += int(n)
        if self.keep_frame:
            self.frames.append(txs.to_frame())

    def collect_labels(self, txs: DayTransactions, ids: pa.Array) -> None:
        for label_day, chunk in _label_chunks(txs, ids, self.delay_s):
            if self.first_label <= label_day <= self.last_label:
                self.pending[label_day].append(chunk)

    def flush_labels(self, complete_until: int) -> None:
        """Write the label days up to `complete_until` (ordinal): no later tx can reach them."""
        for label_day in sorted(d for d in self.pending if d <= complete_until):
            day = date.fromordinal(label_day)
            self.put(
                label_key(day, self.fmt), _label_file(day, self.pending.pop(label_day), self.fmt)
            )


def simulate(
    store: ObjectStore,
    start: date,
    days: int,
    *,
    seed: int = 42,
    scale: float = 1.0,
    customers: int | None = None,
    terminals: int | None = None,
    fmt: str = "csv",
    label_delay: timedelta = timedelta(days=7),
    drift: Iterable[str | Drift] | str = (),
    corrupt: Iterable[tuple[str, str] | str] = (),
    labels_until: date | None = None,
    feed_start: date | None = None,
    keep_frame: bool = False,
    progress: bool = True,
) -> SimulationSummary:
    """Land `days` days of hourly transaction files from `start`, and their label files.

    Label files are written for the known_at days from `start` to `labels_until` (default: the
    last simulated day, i.e. what is known by the end of the simulation). They hold the labels
    of transactions from `feed_start` (default `start`) to the last simulated day: pass the
    feed's first day as `feed_start` when continuing an earlier simulation, and the label days
    it left open are completed by regenerating (not re-landing) its last days, so split runs
    give the same files as one run. `corrupt` replaces the file of the given hours by a broken
    variant from `fraudloop.corrupt`. Nothing is loaded from the store; existing keys are
    overwritten with identical bytes for the same arguments.
    """
    began = time.perf_counter()
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    if days < 0:
        raise ValueError(f"days must be >= 0, not {days}")
    drifts = parse_drifts(drift)
    delay_s = _delay_seconds(label_delay)
    last = start + timedelta(days=days - 1)
    corruptions = _corruptions(corrupt, start, last)
    labels_until = labels_until or last
    feed_start = min(feed_start or start, start)
    lookback = max(feed_start, start - timedelta(days=math.ceil(delay_s / DAY_S)))
    population = make_population(seed, scale, customers, terminals)

    summary = SimulationSummary(start=start, days=days)
    if days == 0:
        return summary
    run = _Run(
        store,
        fmt,
        delay_s,
        (start.toordinal(), labels_until.toordinal()),
        corruptions,
        keep_frame,
        summary,
    )
    calendar = [lookback + timedelta(days=i) for i in range((last - lookback).days + 1)]
    bar = tqdm(calendar, desc="simulate", unit="day", file=sys.stderr, disable=not progress)
    for day in bar:
        txs = generate_transactions(population, day, drifts)
        if day >= start:
            ids = run.land_transactions(txs)
            bar.set_postfix(tx=summary.transactions, refresh=False)
        else:
            ids = txs.transaction_ids()
        run.collect_labels(txs, ids)
        run.flush_labels(day.toordinal() + delay_s // DAY_S)
    run.flush_labels(labels_until.toordinal())
    bar.close()
    if keep_frame and run.frames:
        summary.frame = pd.concat(run.frames, ignore_index=True)
    summary.seconds = time.perf_counter() - began
    return summary
