// A tiny HTTP-ish router in JavaScript.
import express from 'express';
import { readFile, writeFile as write } from 'fs/promises';
import * as path from 'path';
const util = require('util');

export function createApp(options) {
  return new Router(options);
}

class Router {
  constructor(options) {
    this.routes = [];
  }

  add(route, handler) {
    this.routes.push({ route, handler });
  }
}

const handle = (req, res) => {
  res.end('ok');
};
