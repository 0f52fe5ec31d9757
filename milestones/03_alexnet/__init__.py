"""03 — ImageNet Classification with Deep Convolutional Neural Networks (Krizhevsky, Sutskever & Hinton, 2012)."""

META = dict(
    short='Krizhevsky et al. 2012',
    year=2012,
    years="2012",  # the span of the papers the chapter follows
    title="AlexNet",
    paper="Krizhevsky, Sutskever & Hinton 2012, NeurIPS 25",
    dataset="CIFAR-10 (ImageNet ImageFolder on a GPU)",
    metric="test_error; epochs_to_25pct_train_error",
)
