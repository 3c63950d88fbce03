"""How a version reaches traffic: packages, the staging test, release, canary rollouts with
their analysis, the HTTP contract, the prediction log, and batch scoring.
"""
