/**
 * prom-client finds a labelled child by hashing its labels on every `labels()` or `inc(labels)` call.
 * On a hot path (a scan, a judged check-in, a webhook attempt) that lookup cost 1.5 to 4% of the busy
 * time in profiles, so the hot paths keep each child once found. This is that cache, written once.
 */
export function childCache<A extends string[], C>(find: (...values: A) => C): (...values: A) => C {
  const children = new Map<string, C>();
  return (...values: A): C => {
    const key = values.join('\u0000');
    let child = children.get(key);
    if (child === undefined) {
      child = find(...values);
      children.set(key, child);
    }
    return child;
  };
}
