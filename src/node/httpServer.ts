/** /healthz (a self-check through our own sockets), /readyz and /metrics over plain HTTP. */
import http from 'node:http';
import type { DriverMetrics } from './metrics.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';

export async function startHttp(
  listen: { host: string; port: number },
  handlers: { health: () => Promise<void>; ready: () => string | undefined; metrics: DriverMetrics },
  logger: Logger,
): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const url = req.url?.split('?')[0];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (url === '/healthz') {
      handlers.health().then(
        () => {
          reply(200, 'ok\n');
        },
        (err: unknown) => {
          reply(503, `unhealthy: ${errorMessage(err)}\n`);
        },
      );
    } else if (url === '/readyz') {
      const notReady = handlers.ready();
      reply(notReady ? 503 : 200, notReady ? `not ready: ${notReady}\n` : 'ok\n');
    } else if (url === '/metrics') {
      handlers.metrics.registry.metrics().then(
        (text) => {
          reply(200, text, handlers.metrics.registry.contentType);
        },
        (err: unknown) => {
          reply(500, errorMessage(err));
        },
      );
    } else {
      reply(404, 'not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  logger.info({ address: server.address() }, 'HTTP endpoints serving /healthz /readyz /metrics');
  return server;
}
