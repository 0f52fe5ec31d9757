"""02 — Convolutional networks: LeCun et al. 1989 (zip codes) and LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998)."""

META = dict(
    short='LeCun et al. 1989, 1998',
    year=1989,
    years="1989-1998",  # the span of the papers the chapter follows
    title="Convolutional networks (LeNet)",
    paper="LeCun et al. 1989, Neural Computation 1:541; LeCun, Bottou, Bengio & Haffner 1998, Proc. IEEE 86:2278",
    dataset="MNIST (16x16 for the 1989 net, padded to 32x32 for LeNet-5)",
    metric="test_error",
)
