"""04 — Deep residual learning (He, Zhang, Ren & Sun, 2015), with Batch Normalization (Ioffe & Szegedy, 2015)."""

META = dict(
    short='He et al. 2015',
    year=2015,
    years="2015",  # the span of the papers the chapter follows
    title="Residual networks + BatchNorm",
    paper="He, Zhang, Ren & Sun 2015, arXiv:1512.03385 (CVPR 2016); Ioffe & Szegedy 2015",
    dataset="CIFAR-10 (ImageNet configurations built and counted)",
    metric="test_error; plain vs residual training error",
)
