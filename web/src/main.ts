import { createApp } from 'vue';
import App from './App.vue';
import './style.css';

// Theme: the system's unless the user picked one (a preference, not a secret).
const theme = localStorage.getItem('messenger.theme');
if (theme === 'light' || theme === 'dark') document.documentElement.dataset.theme = theme;

createApp(App).mount('#app');
