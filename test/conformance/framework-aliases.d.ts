// Express 4 and Koa 2 are installed under aliases beside Express 5 and Koa 3 so the adapters can be
// tested against both majors. They ship no types of their own; the next major's types cover the
// small surface the tests use (app.use, app.get, listen, ctx).
declare module 'express4' {
  import express from 'express';
  export default express;
}

declare module 'koa2' {
  import Koa from 'koa';
  export default Koa;
}
