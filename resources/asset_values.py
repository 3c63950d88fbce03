"""Small asset values (a dataset manifest, a registered candidate, an evaluation) as JSON in the
object store, so they travel from the step that made them to the steps that use them.

A value is written twice: under its run (``asset-values/runs/<run_id>/<asset>.json``) and as the
asset's latest (``asset-values/latest/<asset>.json``). A step reads the value its upstream step
wrote *in the same run* (or the run it re-executes), never whatever another run wrote since;
only an upstream outside the run (the UI materializing one asset on its own) reads the latest.
JSON only: nothing here is a pickle.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from fraudloop.core import keyspace
from resources.store import ObjectStoreResource

EPHEMERAL_RUN = "__EPHEMERAL_RUN_ID"  # Dagster's run id of an upstream that is not in the run


def _name(key: dg.AssetKey) -> str:
    return "__".join(key.path)


class AssetValueIOManager(dg.ConfigurableIOManager):
    store: ObjectStoreResource

    def _key(self, scope: str, asset: dg.AssetKey) -> str:
        return f"{keyspace.ASSET_VALUES}/{scope}/{_name(asset)}.json"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        data = json.dumps(obj, sort_keys=True, default=str).encode()
        store = self.store.open()
        store.put_bytes(self._key(f"runs/{context.run_id}", context.asset_key), data)
        store.put_bytes(self._key("latest", context.asset_key), data)

    def load_input(self, context: dg.InputContext) -> Any:
        store = self.store.open()
        run_id = context.upstream_output.run_id if context.upstream_output else EPHEMERAL_RUN
        scope = "latest" if run_id in (None, EPHEMERAL_RUN) else f"runs/{run_id}"
        key = self._key(scope, context.asset_key)
        if not store.exists(key):
            raise dg.Failure(
                f"no value of {context.asset_key.to_user_string()} in {scope}: materialize it first"
            )
        return json.loads(store.get_bytes(key))
