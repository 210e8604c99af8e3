"""DVC stage `prepare`: raw table -> data/prepared/{train,test}.parquet + schema.json."""

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.data import prepare, read_table
from hpopipe.entry import run
from hpopipe.handoffs.schema import write_schema


def main() -> None:
    params = load_params()
    prepared = prepare(read_table(params.data.path), params.data, params.seed)
    artifacts.write_frame(artifacts.TRAIN, prepared.train)
    artifacts.write_frame(artifacts.TEST, prepared.test)
    write_schema(artifacts.SCHEMA, prepared.schema)


if __name__ == "__main__":
    run(main)
