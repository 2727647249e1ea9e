import { describe, expect, it } from 'vitest';
import { AdmissionController, type Permit } from '../../src/admission.js';

describe('AdmissionController', () => {
  it('admits exactly limit requests and refuses the next at once', () => {
    const admission = new AdmissionController({ maxConcurrentRequests: 3 });
    const permits = [admission.tryAcquire(), admission.tryAcquire(), admission.tryAcquire()];
    expect(permits.every((p) => p !== null)).toBe(true);
    expect(admission.inFlight).toBe(3);
    expect(admission.tryAcquire()).toBeNull();
    expect(admission.inFlight).toBe(3);
    expect(admission.limit).toBe(3);
  });

  it('frees a place on release, and a second release of the same permit frees nothing', () => {
    const admission = new AdmissionController({ maxConcurrentRequests: 2 });
    const a = admission.tryAcquire() as Permit;
    const b = admission.tryAcquire() as Permit;
    a.release();
    expect(a.released).toBe(true);
    expect(admission.inFlight).toBe(1);
    a.release();
    a.release();
    expect(admission.inFlight).toBe(1);
    const c = admission.tryAcquire() as Permit;
    expect(c).not.toBeNull();
    expect(admission.tryAcquire()).toBeNull();
    b.release();
    c.release();
    expect(b.released && c.released).toBe(true);
    expect(admission.inFlight).toBe(0);
  });

  it('reports every change of the count, and nothing for a repeated release', () => {
    const counts: number[] = [];
    const admission = new AdmissionController({ maxConcurrentRequests: 1, onChange: (n) => counts.push(n) });
    const permit = admission.tryAcquire() as Permit;
    expect(admission.tryAcquire()).toBeNull();
    permit.release();
    permit.release();
    expect(counts).toEqual([1, 0]);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '4' as unknown as number])(
    'refuses maxConcurrentRequests = %s at construction',
    (limit) => {
      expect(() => new AdmissionController({ maxConcurrentRequests: limit })).toThrow(
        /maxConcurrentRequests must be a positive integer/,
      );
    },
  );
});
