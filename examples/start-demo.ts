/**
 * `npm start`: builds the demo fixture model if it is missing, then serves the routes on
 * http://127.0.0.1:3000 through the example Express app.
 */
import { ensureFixtureModel } from '../src/fixture/index.js';
import { startExpressApp } from './express-app.js';

const port = Number(process.env.PORT ?? 3000);
console.log('Preparing the demo model (built once into .fixtures/demo; random weights, so the text is gibberish) ...');
const model = await ensureFixtureModel('demo');
const app = await startExpressApp({ model, port, host: '127.0.0.1' });
console.log(`Ready: ${app.url}  (routes under ${app.url}/llm)`);
