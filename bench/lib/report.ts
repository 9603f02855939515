/**
 * How benchmarks print: a plain-text table for people, then, as the very last line of output, one JSON
 * object with the same figures for machines (CI, docs/benchmarks.md).
 */

/** Rounds to `digits` decimals; NaN and infinities become null so the JSON line stays valid. */
export function round(value: number, digits = 2): number | null {
  if (!Number.isFinite(value)) return null;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** A number for a table cell: thousands separated, `digits` decimals. */
export function fmt(value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '-';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function mib(bytes: number | undefined): string {
  return bytes === undefined ? '-' : `${fmt(bytes / 1024 ** 2, 1)} MiB`;
}

/** Prints rows under a header, columns padded; numbers (and `-`) right-aligned, text left-aligned. */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_h, i) => rows.every((r) => /^[-+]?[\d,.]*(%|x|ms|s)?$|^-$/.test(r[i] ?? '')));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (numeric[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
}

/** The last line of a benchmark's output: one JSON object. */
export function printJsonLine(figures: Record<string, unknown>): void {
  console.log(JSON.stringify(figures));
}

/** Prints a progress line to stderr, so stdout holds only the machine, the tables and the JSON line. */
export function progress(message: string): void {
  process.stderr.write(`# ${message}\n`);
}
