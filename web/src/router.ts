// Hash routes, so the server serves one page: #/, #/chat/<id>[/<message_id>], #/join/<id>, #/new, #/people, #/search, #/settings.
import { reactive } from 'vue';

export interface Route {
  name: 'home' | 'chat' | 'join' | 'new' | 'people' | 'search' | 'settings';
  id: string;
  messageId: string;
}

/** An id from the address: 32 hex digits (or the dashed UUID form), as lower-case hex; '' for anything else. */
export function validId(raw: string): string {
  return /^(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i.test(raw) ? raw.replace(/-/g, '').toLowerCase() : '';
}

function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  const [name = 'home', id = '', messageId = ''] = parts;
  const known: Route['name'][] = ['chat', 'join', 'new', 'people', 'search', 'settings'];
  const route: Route = { name: known.includes(name as Route['name']) ? (name as Route['name']) : 'home', id, messageId };
  // A chat's id and message id go into API paths: only well-formed ids ('' otherwise: "chat not found").
  if (route.name === 'chat') {
    route.id = validId(id);
    route.messageId = validId(messageId);
  }
  return route;
}

/** The current route; follows the address bar. */
export const route = reactive<Route>(parse(location.hash));

window.addEventListener('hashchange', () => Object.assign(route, parse(location.hash)));

/** Goes to a route (adds a history entry, so Back works). */
export function go(path: string): void {
  location.hash = `#/${path}`;
}
