"""The simulator follows the handbook's rules, is byte-reproducible and continues across calls."""

from __future__ import annotations

import io
import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fraudloop.core.keyspace import partition_from_landing_key
from fraudloop.core.store import LocalObjectStore
from fraudloop.feeds.drift import DRIFT_GRAMMAR, parse_drift
from fraudloop.feeds.files import parse_corrupt, simulate
from fraudloop.feeds.population import make_population
from fraudloop.feeds.scenarios import (
    SCENARIO_CARD_TESTING,
    SCENARIO_CUSTOMER,
    SCENARIO_TERMINAL,
    compromised_customers,
    compromised_terminals,
    generate_day,
    generate_transactions,
)

START = date(2018, 4, 1)
SMALL = 0.05  # 250 customers, 500 terminals, ~500 transactions a day


def contents(store, prefix: str = "landing/") -> dict[str, bytes]:
    return {info.key: store.get_bytes(info.key) for info in store.list(prefix)}


def read_csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def landed_transactions(store) -> pd.DataFrame:
    frames = []
    for key, data in contents(store, "landing/transactions/").items():
        frame = read_csv(data)
        frame["key"] = key
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def landed_labels(store) -> pd.DataFrame:
    frames = []
    for key, data in contents(store, "landing/labels/").items():
        frame = read_csv(data)
        frame["folder_day"] = key.split("/")[2]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def days_of(population, start: date, days: int, drift=()) -> pd.DataFrame:
    frames = [generate_day(population, start + timedelta(days=i), drift=drift) for i in range(days)]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def small_days() -> pd.DataFrame:
    """Three weeks at scale 0.2 (~2,000 transactions a day), with scenarios."""
    return days_of(make_population(7, 0.2), START, 21)


# --- reproducibility ---------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_on_both_backends(store, tmp_path):
    kwargs = dict(seed=3, scale=SMALL, progress=False, label_delay=timedelta(days=1))
    summary = simulate(store, START, 3, **kwargs)
    reference = LocalObjectStore(tmp_path / "reference")
    simulate(reference, START, 3, **kwargs)
    landed = contents(store)
    assert landed == contents(reference)
    assert summary.transaction_files == len([k for k in landed if "/transactions/" in k]) > 24
    assert summary.label_files == 2  # labels known on days 2 and 3


def test_different_seed_gives_different_data(tmp_path):
    one, two = LocalObjectStore(tmp_path / "a"), LocalObjectStore(tmp_path / "b")
    simulate(one, START, 1, seed=1, scale=SMALL, progress=False)
    simulate(two, START, 1, seed=2, scale=SMALL, progress=False)
    assert contents(one) != contents(two)


@pytest.mark.parametrize("delay", [timedelta(days=2), timedelta(hours=30)])
def test_split_runs_give_the_same_files_as_one_run(tmp_path, delay):
    kwargs = dict(
        seed=5,
        scale=SMALL,
        label_delay=delay,
        drift=["card_testing@2018-04-03", "new_terminals:40@2018-04-06"],
        progress=False,
    )
    whole = LocalObjectStore(tmp_path / "whole")
    simulate(whole, START, 8, **kwargs)
    split = LocalObjectStore(tmp_path / "split")
    simulate(split, START, 4, **kwargs)
    simulate(split, START + timedelta(days=4), 4, feed_start=START, **kwargs)
    assert contents(split) == contents(whole)
    assert len(contents(whole, "landing/labels/")) == (6 if delay.days == 2 else 7)


def test_compromises_started_before_the_first_day_are_applied():
    population = make_population(11, 1.0)
    day = START
    frame = generate_day(population, day)
    # on the first requested day, 28 days of terminal draws are already in force
    assert 40 <= len(compromised_terminals(population, day)) <= 56
    assert 30 <= len(compromised_customers(population, day)) <= 42
    assert (frame.scenario == SCENARIO_TERMINAL).sum() > 25  # ~1 tx per terminal per day


def test_generate_day_matches_the_landed_files(tmp_path):
    store = LocalObjectStore(tmp_path)
    simulate(store, START, 1, seed=9, scale=SMALL, progress=False)
    landed = landed_transactions(store).drop(columns="key")
    frame = generate_day(make_population(9, SMALL), START)
    assert landed.transaction_id.tolist() == frame.transaction_id.tolist()
    assert landed.customer_id.tolist() == frame.customer_id.tolist()
    assert landed.terminal_id.tolist() == frame.terminal_id.tolist()
    assert landed.amount.astype(float).tolist() == frame.amount.tolist()
    assert (pd.to_datetime(landed.tx_datetime, utc=True) == frame.tx_datetime).all()


# --- file layout and format --------------------------------------------------------------------


def test_transaction_files_have_the_canonical_layout_and_format(tmp_path):
    store = LocalObjectStore(tmp_path)
    summary = simulate(store, START, 3, seed=1, scale=SMALL, progress=False, keep_frame=True)
    for key, data in contents(store, "landing/transactions/").items():
        assert re.fullmatch(r"landing/transactions/\d{4}-\d{2}-\d{2}/\d{2}/part-0000\.csv", key)
        assert partition_from_landing_key(key)[0] == "transactions"
        assert data.startswith(b"transaction_id,tx_datetime,customer_id,terminal_id,amount\n")
        assert data.endswith(b"\n") and b"\r" not in data and b'"' not in data
    landed = landed_transactions(store)
    assert len(landed) == summary.transactions == len(summary.frame)
    assert landed.transaction_id.is_unique
    assert landed.transaction_id.str.fullmatch(r"2018040[123]-\d{7}").all()
    assert landed.customer_id.str.fullmatch(r"C\d{7}").all()
    assert landed.terminal_id.str.fullmatch(r"T\d{7}").all()
    assert landed.amount.str.fullmatch(r"\d+\.\d{2}").all()
    assert (landed.amount.astype(float) > 0).all()
    assert landed.tx_datetime.str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z").all()
    # every transaction is inside the hour of its file
    folder_hour = landed.key.str.slice(21, 31) + "T" + landed.key.str.slice(32, 34)
    assert (landed.tx_datetime.str.slice(0, 13) == folder_hour).all()
    # ids are ranked by time within a day
    ordered = landed.sort_values("transaction_id")
    assert ordered.tx_datetime.is_monotonic_increasing


def test_parquet_output_holds_the_same_data_as_csv(tmp_path):
    csv_store, pq_store = LocalObjectStore(tmp_path / "csv"), LocalObjectStore(tmp_path / "pq")
    no_delay = dict(label_delay=timedelta(0), progress=False)
    simulate(csv_store, START, 2, seed=4, scale=SMALL, **no_delay)
    simulate(pq_store, START, 2, seed=4, scale=SMALL, fmt="parquet", **no_delay)
    csv_keys, pq_keys = contents(csv_store), contents(pq_store)
    assert [k.replace(".csv", ".parquet") for k in csv_keys] == list(pq_keys)
    key = next(k for k in pq_keys if "/transactions/" in k)
    table = pq.read_table(io.BytesIO(pq_keys[key]))
    assert table.column_names == [
        "transaction_id",
        "tx_datetime",
        "customer_id",
        "terminal_id",
        "amount",
    ]
    assert str(table.schema.field("tx_datetime").type) == "timestamp[us, tz=UTC]"
    frame = table.to_pandas()
    expected = read_csv(csv_keys[key.replace(".parquet", ".csv")])
    assert frame.transaction_id.tolist() == expected.transaction_id.tolist()
    assert np.allclose(frame.amount, expected.amount.astype(float))
    assert (frame.tx_datetime == pd.to_datetime(expected.tx_datetime, utc=True)).all()
    labels = pq.read_table(io.BytesIO(pq_keys["landing/labels/2018-04-01/labels.parquet"]))
    assert labels.column_names == ["transaction_id", "is_fraud", "known_at"]


def test_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        simulate(LocalObjectStore(tmp_path), START, 1, fmt="json", progress=False)


# --- the handbook's rules ----------------------------------------------------------------------


def test_population_follows_the_handbook_and_scales():
    handbook = make_population(0, 1.0)
    assert (handbook.n_customers, handbook.n_terminals, handbook.side) == (5_000, 10_000, 100.0)
    assert handbook.mean_amount.min() >= 4.9
    assert handbook.mean_amount.max() <= 100
    assert np.allclose(handbook.std_amount, handbook.mean_amount / 2)
    assert 70 <= handbook.reach_counts.mean() <= 80  # ~pi * 5^2 terminals, fewer at the edges
    small = make_population(0, SMALL)
    assert (small.n_customers, small.n_terminals) == (250, 500)
    assert small.side == pytest.approx(100 * SMALL**0.5)
    assert make_population(0, customers=10, terminals=20).n_terminals == 20


def test_customers_only_use_terminals_within_radius():
    population = make_population(2, SMALL, terminals=10)  # sparse: some customers reach nothing
    unreachable = np.flatnonzero(population.reach_counts == 0)
    assert len(unreachable) > 0
    txs = generate_transactions(population, START)
    genuine = txs.scenario != SCENARIO_CARD_TESTING
    gap = population.customer_xy[txs.customer] - population.terminal_xy[txs.terminal]
    assert (np.hypot(*gap[genuine].T) <= 5.0).all()
    assert not np.isin(txs.customer, unreachable).any()
    # the reach lists hold exactly the terminals within the radius
    for customer in range(0, population.n_customers, 25):
        distance = np.hypot(*(population.terminal_xy - population.customer_xy[customer]).T)
        assert sorted(population.reach(customer)) == list(np.flatnonzero(distance <= 5.0))


def test_fraud_scenarios_follow_their_rules(small_days):
    frame = small_days
    assert (frame.is_fraud == (frame.scenario > 0)).all()
    assert frame[frame.amount > 220].is_fraud.all()
    population = make_population(7, 0.2)
    for day, rows in frame.groupby(frame.tx_datetime.dt.date):
        compromised = population.terminal_ids(compromised_terminals(population, day))
        assert rows[rows.terminal_id.isin(compromised)].is_fraud.all()
        assert rows[rows.scenario == SCENARIO_TERMINAL].terminal_id.isin(compromised).all()
        cards = population.customer_ids(compromised_customers(population, day))
        assert rows[rows.scenario == SCENARIO_CUSTOMER].customer_id.isin(cards).all()
    scenario3 = frame[frame.scenario == SCENARIO_CUSTOMER]
    assert len(scenario3) > 20
    assert scenario3.amount.mean() > 3 * frame[frame.scenario == 0].amount.mean()


def test_handbook_volume_and_fraud_rate():
    """Three weeks at the handbook's size: ~10,000 transactions a day and ~0.84 % fraud."""
    population = make_population(42, 1.0)
    days = [generate_transactions(population, START + timedelta(days=i)) for i in range(21)]
    per_day = np.array([len(d) for d in days])
    assert (abs(per_day - 10_000) <= 1_500).all()
    fraud_rate = sum(int((d.scenario > 0).sum()) for d in days) / per_day.sum()
    assert 0.004 <= fraud_rate <= 0.015


# --- labels ------------------------------------------------------------------------------------


def test_labels_land_on_the_day_they_become_known(tmp_path):
    store = LocalObjectStore(tmp_path)
    delay = timedelta(hours=30)
    summary = simulate(
        store, START, 4, seed=8, scale=SMALL, label_delay=delay, progress=False, keep_frame=True
    )
    labels = landed_labels(store)
    assert sorted(labels.folder_day.unique()) == ["2018-04-02", "2018-04-03", "2018-04-04"]
    assert labels.transaction_id.is_unique
    assert (labels.known_at.str.slice(0, 10) == labels.folder_day).all()
    truth = summary.frame.set_index("transaction_id")
    expected_known = truth.tx_datetime + delay
    known = pd.to_datetime(labels.known_at, utc=True).set_axis(labels.transaction_id)
    assert (known.to_numpy() == expected_known.loc[known.index].to_numpy()).all()
    is_fraud = labels.set_index("transaction_id").is_fraud.astype(int)
    assert (is_fraud.to_numpy() == truth.is_fraud.loc[is_fraud.index].to_numpy()).all()
    # by default only labels known by the end of the last simulated day
    assert (known < pd.Timestamp("2018-04-05", tz="UTC")).all()
    assert len(labels) == (expected_known < pd.Timestamp("2018-04-05", tz="UTC")).sum()


def test_labels_until_extends_or_cuts_the_label_days(tmp_path):
    longer = LocalObjectStore(tmp_path / "longer")
    simulate(longer, START, 3, scale=SMALL, labels_until=date(2018, 4, 30), progress=False)
    days = sorted(landed_labels(longer).folder_day.unique())
    assert days == ["2018-04-08", "2018-04-09", "2018-04-10"]  # all simulated labels, no more
    shorter = LocalObjectStore(tmp_path / "shorter")
    kwargs = dict(scale=SMALL, label_delay=timedelta(days=1), progress=False)
    simulate(shorter, START, 5, labels_until=date(2018, 4, 3), **kwargs)
    assert sorted(landed_labels(shorter).folder_day.unique()) == ["2018-04-02", "2018-04-03"]


def test_labels_of_transactions_before_start_are_not_written(tmp_path):
    store = LocalObjectStore(tmp_path)
    later = START + timedelta(days=10)
    simulate(store, later, 3, scale=SMALL, label_delay=timedelta(days=1), progress=False)
    labels = landed_labels(store)
    assert sorted(labels.folder_day.unique()) == ["2018-04-12", "2018-04-13"]
    assert labels.transaction_id.str.startswith(("20180411", "20180412")).all()


# --- drift -------------------------------------------------------------------------------------


def test_card_testing_adds_small_scenario_4_bursts_from_its_date():
    population = make_population(3, 0.2)
    frame = days_of(population, START, 4, drift=["card_testing:4@2018-04-03"])
    testing = frame[frame.scenario == SCENARIO_CARD_TESTING]
    assert not testing.empty
    assert (testing.tx_datetime >= pd.Timestamp("2018-04-03", tz="UTC")).all()
    assert testing.is_fraud.all()
    assert testing.amount.between(0.5, 5.0).all()
    assert set(testing.tx_datetime.dt.date) == {date(2018, 4, 3), date(2018, 4, 4)}
    bursts = testing.groupby([testing.customer_id, testing.tx_datetime.dt.date])
    assert (bursts.size() >= 10).all()
    assert (bursts.tx_datetime.agg(lambda t: t.max() - t.min()) <= pd.Timedelta(minutes=15)).all()
    assert (bursts.terminal_id.nunique() <= 3).all()
    before = days_of(population, START, 2)
    assert before.equals(frame[frame.tx_datetime < pd.Timestamp("2018-04-03", tz="UTC")])


def test_amount_shift_scales_amounts_from_its_date():
    population = make_population(3, SMALL)
    day_before, day_after = date(2018, 4, 14), date(2018, 4, 15)
    drift = ["amount_shift:1.3@2018-04-15"]
    assert generate_day(population, day_before, drift=drift).equals(
        generate_day(population, day_before)
    )
    base = generate_transactions(population, day_after)
    shifted = generate_transactions(population, day_after, drift)
    assert (shifted.customer == base.customer).all() and (shifted.terminal == base.terminal).all()
    assert np.abs(shifted.cents - 1.3 * base.cents).max() <= 1.3 * 5 + 1  # rounding of cents
    assert shifted.cents.sum() / base.cents.sum() == pytest.approx(1.3, rel=0.01)
    assert (shifted.scenario[shifted.cents > 22_000] > 0).all()


def test_new_terminals_appear_from_their_date_and_nearby_customers_use_them():
    population = make_population(3, 0.2)
    drift = ["new_terminals:300@2018-04-02"]
    before = generate_transactions(population, START, drift)
    after = generate_transactions(population, START + timedelta(days=1), drift)
    base = population.n_base_terminals
    assert (before.terminal < base).all()
    new = after.terminal >= base
    assert new.sum() > 100
    assert after.terminal.max() < base + 300
    gap = (
        after.population.customer_xy[after.customer] - after.population.terminal_xy[after.terminal]
    )
    assert (np.hypot(*gap.T) <= 5.0).all()
    assert after.population.terminal_ids([base])[0] == f"T{base:07d}"


def test_drift_specs_parse_and_combine():
    assert parse_drift("amount_shift:1.3@2018-05-15").value == 1.3
    assert parse_drift("card_testing@2018-05-15").value is None
    assert parse_drift(" new_terminals:500@2018-05-15 ").spec == "new_terminals:500@2018-05-15"
    population = make_population(1, SMALL)
    both = ["card_testing:2@2018-04-01", "amount_shift:2@2018-04-01"]
    txs = generate_transactions(population, START, both)
    testing = txs.scenario == SCENARIO_CARD_TESTING
    assert testing.any()
    assert (txs.cents[testing] <= 500).all()  # card-testing amounts are not shifted
    base = generate_transactions(population, START).cents.sum()
    assert txs.cents[~testing].sum() / base == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize(
    "spec",
    [
        "card_testing",
        "amount_shift@2018-05-15",
        "amount_shift:-1@2018-05-15",
        "amount_shift:abc@2018-05-15",
        "new_terminals:2.5@2018-05-15",
        "surprise:3@2018-05-15",
        "card_testing@2018-02-30",
    ],
)
def test_bad_drift_spec_names_the_grammar(spec, tmp_path):
    with pytest.raises(ValueError, match="Accepted grammar") as error:
        parse_drift(spec)
    assert DRIFT_GRAMMAR in str(error.value)
    with pytest.raises(ValueError, match="Accepted grammar"):
        simulate(LocalObjectStore(tmp_path), START, 1, drift=[spec], progress=False)


# --- corrupted files ---------------------------------------------------------------------------


def test_parse_corrupt_accepts_cli_and_partition_forms():
    assert parse_corrupt("bad_header@2018-04-01T05") == ("bad_header", "2018-04-01-05:00")
    assert parse_corrupt(("x", "2018-04-01-05:00")) == ("x", "2018-04-01-05:00")
    for bad in ["bad_header", "bad_header@2018-04-01", "@2018-04-01T05", "k@2018-04-01T05:30"]:
        with pytest.raises(ValueError, match="KIND@YYYY-MM-DDTHH"):
            parse_corrupt(bad)


def test_corrupt_hour_outside_the_simulation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        simulate(LocalObjectStore(tmp_path), START, 1, corrupt=["x@2018-04-02T05"], progress=False)


def test_corrupted_hour_replaces_the_landed_file(tmp_path):
    corrupt = pytest.importorskip("fraudloop.feeds.corruption")
    kind = sorted(corrupt.CORRUPTION_KINDS)[0]
    good, bad = LocalObjectStore(tmp_path / "good"), LocalObjectStore(tmp_path / "bad")
    simulate(good, START, 1, scale=SMALL, progress=False)
    simulate(bad, START, 1, scale=SMALL, corrupt=[f"{kind}@2018-04-01T12"], progress=False)
    good_files, bad_files = contents(good), contents(bad)
    hour = "landing/transactions/2018-04-01/12/"
    replaced = {k: v for k, v in bad_files.items() if k.startswith(hour)}
    assert len(replaced) == 1
    assert replaced != {k: v for k, v in good_files.items() if k.startswith(hour)}
    others = {k: v for k, v in bad_files.items() if not k.startswith(hour)}
    assert others == {k: v for k, v in good_files.items() if not k.startswith(hour)}


def test_progress_bar_goes_to_stderr_and_can_be_disabled(tmp_path, capsys):
    simulate(LocalObjectStore(tmp_path / "a"), START, 2, scale=SMALL, progress=True)
    assert "simulate" in capsys.readouterr().err
    simulate(LocalObjectStore(tmp_path / "b"), START, 2, scale=SMALL, progress=False)
    assert capsys.readouterr().err == ""
