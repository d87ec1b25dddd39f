// Hash routes, so the server serves one page: #/, #/chat/<id>[/<message_id>], #/join/<id>, #/new, #/people, #/search, #/settings.
import { reactive } from 'vue';

export interface Route {
  name: 'home' | 'chat' | 'join' | 'new' | 'people' | 'search' | 'settings';
  id: string;
  messageId: string;
}

function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  const [name = 'home', id = '', messageId = ''] = parts;
  const known: Route['name'][] = ['chat', 'join', 'new', 'people', 'search', 'settings'];
  return { name: known.includes(name as Route['name']) ? (name as Route['name']) : 'home', id, messageId };
}

/** The current route; follows the address bar. */
export const route = reactive<Route>(parse(location.hash));

window.addEventListener('hashchange', () => Object.assign(route, parse(location.hash)));

/** Goes to a route (adds a history entry, so Back works). */
export function go(path: string): void {
  location.hash = `#/${path}`;
}
