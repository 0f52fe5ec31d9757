"""07 — Learning to generate: the variational auto-encoder (Kingma & Welling 2013), generative adversarial
nets (Goodfellow et al. 2014) and their convolutional form DCGAN (Radford, Metz & Chintala 2015), and
denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020)."""

META = dict(
    short='Kingma 2013 to Ho 2020',
    year=2013,
    years="2013-2020",  # the span of the papers the chapter follows
    title="VAE, GAN/DCGAN, DDPM",
    paper="Kingma & Welling 2013; Goodfellow et al. 2014; Radford et al. 2015; Ho et al. 2020",
    dataset="MNIST, CIFAR-10",
    metric="NLL / classifier FID",
)
