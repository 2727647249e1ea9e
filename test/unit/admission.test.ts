import { describe, expect, it } from 'vitest';
import { AdmissionController, acquireAll, engineAdmission, type Permit } from '../../src/admission.js';

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
    expect(admission.inFlight).toBe(1);
    a.release();
    a.release();
    expect(admission.inFlight).toBe(1);
    const c = admission.tryAcquire() as Permit;
    expect(c).not.toBeNull();
    expect(admission.tryAcquire()).toBeNull();
    b.release();
    c.release();
    expect(admission.inFlight).toBe(0);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '4' as unknown as number])(
    'refuses maxConcurrentRequests = %s at construction',
    (limit) => {
      expect(() => new AdmissionController({ maxConcurrentRequests: limit })).toThrow(/maxConcurrentRequests must be a positive integer/);
    },
  );
});

describe('engineAdmission and acquireAll', () => {
  it('gives every mount of one engine the same controller, at the highest limit declared', () => {
    const engine = {};
    const first = engineAdmission(engine, 2);
    expect(engineAdmission(engine, 8)).toBe(first);
    expect(engineAdmission(engine, 4).limit).toBe(8);
    expect(engineAdmission({}, 4)).not.toBe(first);
    expect(() => engineAdmission(engine, 0)).toThrow(RangeError);
  });

  it('takes a permit from every controller or from none', () => {
    const mount = new AdmissionController({ maxConcurrentRequests: 1 });
    const shared = new AdmissionController({ maxConcurrentRequests: 2 });
    const other = new AdmissionController({ maxConcurrentRequests: 5 });
    const a = acquireAll([mount, shared]);
    expect([mount.inFlight, shared.inFlight]).toEqual([1, 1]);
    // The mount is full: nothing is held in the shared count either.
    expect(acquireAll([mount, shared])).toBeNull();
    expect(shared.inFlight).toBe(1);
    const b = acquireAll([other, shared]);
    expect(acquireAll([other, shared])).toBeNull();
    expect(other.inFlight).toBe(1);
    a?.release();
    a?.release();
    expect([mount.inFlight, shared.inFlight]).toEqual([0, 1]);
    b?.release();
    expect([other.inFlight, shared.inFlight]).toEqual([0, 0]);
  });
});
