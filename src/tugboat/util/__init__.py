"""Small dependency-free helpers shared by every layer (cli, api, engine, images, cluster, bench,
tests). Modules here import nothing heavy: the CLI loads them on start-up."""
