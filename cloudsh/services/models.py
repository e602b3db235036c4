"""`python -m cloudsh.services.models`: parse and pickle the botocore models every command
loads (EC2's), as the install compiles cloudsh's bytecode, so that a first start does not
parse 4 MB of JSON (`services.aws.CachingLoader` reads them)."""

from __future__ import annotations

from cloudsh.services.aws import PREPARED_MODELS, prepare_models


def main() -> None:
    for path in prepare_models(PREPARED_MODELS):
        print(f"cloudsh: prepared {path.name}")


if __name__ == "__main__":
    main()
