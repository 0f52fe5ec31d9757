"""01 — Learning representations by back-propagating errors (Rumelhart, Hinton & Williams, 1986)."""

META = dict(
    short='Rumelhart et al. 1986',
    year=1986,
    years="1986",  # the span of the papers the chapter follows
    title="Backpropagation in multi-layer networks",
    paper="Rumelhart, Hinton & Williams 1986, Nature 323:533",
    dataset="mirror symmetry (generated); MNIST",
    metric="sweeps_to_solve; test_error",
)
