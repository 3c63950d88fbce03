"""What the service did and whether the world moved: serving health, Evidently drift against the
model's reference, accuracy on matured labels, what is due, and when to retrain.
"""
