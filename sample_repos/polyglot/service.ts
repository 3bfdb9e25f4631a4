// TypeScript: interfaces, enums, classes and a namespace.
import { Injectable } from '@angular/core';
import type { Config } from './config';
import * as fs from 'fs';

export interface User {
  id: number;
  name: string;
}

export enum Role {
  Admin,
  Guest,
}

type UserId = number;

@Injectable()
export class UserService {
  private users: User[] = [];

  find(id: UserId): User | undefined {
    return this.users.find((u) => u.id === id);
  }

  add(user: User): void {
    this.users.push(user);
  }
}

export function loadConfig(path: string): Config {
  return JSON.parse(fs.readFileSync(path, 'utf8'));
}

namespace Helpers {
  export function slug(text: string): string {
    return text.toLowerCase();
  }
}
