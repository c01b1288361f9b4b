"""The `asm` command line (docs/cli.md): a thin client over the HTTP API or, with no
`ASM_URL`, over the services in-process (embedded mode)."""
