"""The web demo: a shop front that recommends with the trained model and the visitor's interests."""
