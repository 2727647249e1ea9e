/**
 * Which upstream takes the next request: least loaded by power of two choices. The load is our own
 * in-flight count, which reacts at once to our own dispatches, plus the requests of other clients
 * that its fresh scrape shows, over its capacity. Sampling two at random and taking the lighter one
 * spreads a burst instead of sending it all to the one that looked best at the last scrape, and ties
 * go either way, never to the first declared.
 */

export interface Load {
  /** Requests we have sent it that are not finished. */
  inFlight: number;
  capacity: number;
  /** Requests of other clients on it (`othersLoad`) when freshly scraped, else 0: a stale sample never makes it look lighter. */
  others: number;
}

/** Lower is lighter. @example loadScore({ inFlight: 1, capacity: 4, others: 2 }); // 0.75 */
export function loadScore(load: Load): number {
  return (load.inFlight + load.others) / load.capacity;
}

/**
 * The requests of other clients an upstream holds: what it reports waiting and running, less ours
 * at that moment, which its counts include and our in-flight count already weighs. Without the
 * subtraction our own requests would count twice while they wait for their prefill there.
 *
 * @example
 * othersLoad({ queue: 3, running: 8, ours: 6 }); // 5
 */
export function othersLoad(scraped: { queue: number; running: number; ours: number }): number {
  return Math.max(0, scraped.queue + scraped.running - scraped.ours);
}

/**
 * The lighter of two candidates drawn at random (the only one when there is one).
 *
 * @example
 * pickLeastLoaded([a, b, c], (u) => loadScore(u.load), Math.random);
 */
export function pickLeastLoaded<T>(candidates: readonly T[], score: (candidate: T) => number, random: () => number): T | null {
  if (candidates.length === 0) return null;
  if (candidates.length === 1) return candidates[0];
  const first = Math.floor(random() * candidates.length);
  // A second index drawn from the others, so the two are distinct.
  const second = (first + 1 + Math.floor(random() * (candidates.length - 1))) % candidates.length;
  const a = candidates[first];
  const b = candidates[second];
  const difference = score(a) - score(b);
  if (difference !== 0) return difference < 0 ? a : b;
  return random() < 0.5 ? a : b;
}
