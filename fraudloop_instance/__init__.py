"""Plugins of the Dagster instance itself (storage), loaded by the webserver, the daemon and
every run: they import Dagster and its plugins only, never the pipeline, so the instance image
carries them without fraudloop's code."""
