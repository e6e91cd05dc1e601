// Reads one export's parts with DuckDB, as a warehouse loader would, and
// prints, for each format, the columns with DuckDB's types and the rows as
// JSON: { "parquet": {columns, rows}, "csv": …, "ndjson": … }.
//
// Usage: node read.mjs PARQUET CSV NDJSON COLUMNS_JSON
// COLUMNS_JSON is the table in order, [{"name": …, "type": DuckDB type}]
// (from the manifest's columns): CSV and NDJSON carry no types of their
// own; Parquet does and is read without it.
import { DuckDBInstance } from '@duckdb/node-api';

const [parquet, csv, ndjson, columnsJSON] = process.argv.slice(2);
if (!columnsJSON) {
  console.error('usage: node read.mjs PARQUET CSV NDJSON COLUMNS_JSON');
  process.exit(2);
}
const columns = JSON.parse(columnsJSON);

const lit = (s) => `'${s.replaceAll("'", "''")}'`;
const struct = `{${columns.map((c) => `${lit(c.name)}: ${lit(c.type)}`).join(', ')}}`;

const instance = await DuckDBInstance.create(':memory:');
const db = await instance.connect();
await db.run("SET TimeZone = 'UTC'");

async function read(sql) {
  const reader = await db.runAndReadAll(sql);
  const types = reader.columnTypes().map(String);
  return {
    columns: reader.columnNames().map((name, i) => ({ name, type: types[i] })),
    rows: reader.getRowsJson(),
  };
}

const out = {
  parquet: await read(`SELECT * FROM read_parquet(${lit(parquet)})`),
  csv: await read(`SELECT * FROM read_csv(${lit(csv)}, header = true, auto_detect = false, delim = ',', quote = '"', escape = '"', columns = ${struct})`),
  ndjson: await read(`SELECT * FROM read_json(${lit(ndjson)}, format = 'newline_delimited', columns = ${struct})`),
};
db.closeSync();
console.log(JSON.stringify(out));
