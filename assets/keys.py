"""The asset keys of the graph, named once: assets, jobs and sensors refer to them."""

import dagster as dg

RAW_TRANSACTIONS = dg.AssetKey("raw_transactions")
RAW_LABELS = dg.AssetKey("raw_labels")
FRAUD_LABELS = dg.AssetKey("fraud_labels")
TRANSACTION_FEATURES = dg.AssetKey("transaction_features")
ONLINE_FEATURE_STORE = dg.AssetKey("online_feature_store")
TRAINING_DATASET = dg.AssetKey("training_dataset")
CANDIDATE_MODEL = dg.AssetKey("candidate_model")
MODEL_EVALUATION = dg.AssetKey("model_evaluation")
MODEL_PACKAGE = dg.AssetKey("model_package")
MODEL_RELEASE = dg.AssetKey("model_release")
MODEL_ROLLOUT = dg.AssetKey("model_rollout")
PREDICTION_LOG = dg.AssetKey("prediction_log")
PREDICTION_HEALTH = dg.AssetKey("prediction_health")
PREDICTION_DRIFT = dg.AssetKey("prediction_drift")
MODEL_ACCURACY = dg.AssetKey("model_accuracy")
TRANSACTION_FEED = dg.AssetKey("transaction_feed")
LABEL_FEED = dg.AssetKey("label_feed")
