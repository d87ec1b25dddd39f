import type { AppName } from '../config';
import { authApp } from './auth';
import { chatsApp } from './chats';
import { messagesApp } from './messages';
import { searchApp } from './search';
import { throttlingApp } from './throttling';
import { cachingApp } from './caching';
import type { AppFactory } from './types';

/**
 * Every app the settings list can switch on, in mount order. An app listed in
 * APPS but missing here is an error at start-up.
 */
export const APP_FACTORIES: Record<AppName, AppFactory> = {
  auth: authApp,
  chats: chatsApp,
  messages: messagesApp,
  search: searchApp,
  throttling: throttlingApp,
  caching: cachingApp,
};
