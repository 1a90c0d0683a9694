"""Deployment: a trained student as a serving bundle, and the service around it.

``export`` turns a finished run's student into a self-contained folder (a
TensorFlow SavedModel plus id maps and item metadata); ``service`` serves that
folder over HTTP and adds new items from their text. The service side never
imports JAX or the rest of rec_jax: a bundle needs TensorFlow (and a tokenizer
for new items) only.
"""
