"""One simulated day of transactions: genuine spending, the handbook's three fraud scenarios, and
the drift a spec injects (card testing, amount shift, new terminals).

Scenario 1: amount > 220. Scenario 2: each day 2 random terminals are compromised for 28 days; all
their transactions are fraud. Scenario 3: each day 3 random customers are compromised for 14 days;
a third of their transactions in that window get amount x 5 and are fraud.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudloop.feeds.drift import Drift, parse_drifts
from fraudloop.feeds.population import (
    HANDBOOK_CUSTOMERS,
    HANDBOOK_TERMINALS,
    ID_DIGITS,
    Population,
    Stream,
    format_ids,
    random_stream,
    stochastic_round,
)

# --- the handbook's specification (at scale 1) ---
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


def _daily_draw(seed: int, stream: Stream, day: date, size: int, per_day: float) -> np.ndarray:
    rng = random_stream(seed, stream, day.toordinal())
    count = min(stochastic_round(rng, per_day), size)
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
    rng = random_stream(pop.seed, Stream.TRANSACTIONS, day.toordinal())
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
    rng = random_stream(pop.seed, Stream.CARD_TESTING, drift.stream_key, day.toordinal())
    per_day = drift.value or CARD_TESTING_CARDS_PER_DAY * pop.n_customers / HANDBOOK_CUSTOMERS
    n_cards = min(stochastic_round(rng, per_day), pop.n_customers)
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
def time_of_day_strings() -> pa.Array:
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
        return format_ids(f"{self.day:%Y%m%d}-", len(self), width=width)

    def datetime_strings(self) -> pa.Array:
        """ISO 8601 UTC at second resolution, e.g. `2018-04-01T05:12:33Z`."""
        hms = time_of_day_strings().take(pa.array(self.seconds))
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
