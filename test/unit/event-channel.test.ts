import { describe, expect, it } from 'vitest';
import { EventChannel } from '../../src/engine/event-channel.js';

describe('EventChannel', () => {
  it('buffers values pushed before they are read, in order', async () => {
    const channel = new EventChannel<number>();
    channel.push(1);
    channel.push(2);
    expect(await channel.next()).toEqual({ value: 1, done: false });
    expect(await channel.next()).toEqual({ value: 2, done: false });
  });

  it('hands a value straight to a reader that is already waiting', async () => {
    const channel = new EventChannel<string>();
    const pending = channel.next();
    channel.push('a');
    expect(await pending).toEqual({ value: 'a', done: false });
  });

  it('ends after the buffered values, and stays ended', async () => {
    const channel = new EventChannel<number>();
    channel.push(1);
    channel.end();
    expect(channel.closed).toBe(true);
    channel.push(2);
    expect(await channel.next()).toEqual({ value: 1, done: false });
    expect(await channel.next()).toEqual({ value: undefined, done: true });
    expect(await channel.next()).toEqual({ value: undefined, done: true });
  });

  it('ends a waiting reader', async () => {
    const channel = new EventChannel<number>();
    const pending = channel.next();
    channel.end();
    expect(await pending).toEqual({ value: undefined, done: true });
  });

  it('fails after the buffered values are read; the first ending wins', async () => {
    const channel = new EventChannel<number>();
    const error = new Error('boom');
    channel.push(1);
    channel.fail(error);
    channel.end();
    channel.fail(new Error('later'));
    expect(await channel.next()).toEqual({ value: 1, done: false });
    await expect(channel.next()).rejects.toBe(error);
    await expect(channel.next()).rejects.toBe(error);
  });

  it('rejects a waiting reader on failure', async () => {
    const channel = new EventChannel<number>();
    const pending = channel.next();
    const error = new Error('gone');
    channel.fail(error);
    await expect(pending).rejects.toBe(error);
  });

  it('keeps every value when the producer is far ahead of the consumer', async () => {
    const channel = new EventChannel<number>();
    for (let i = 0; i < 10_000; i++) channel.push(i);
    channel.end();
    const read: number[] = [];
    for (let r = await channel.next(); !r.done; r = await channel.next()) read.push(r.value);
    expect(read).toEqual(Array.from({ length: 10_000 }, (_, i) => i));
  });
});
