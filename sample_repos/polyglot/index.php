<?php
// A PHP controller.
namespace App\Http;

use App\Models\User;
use Illuminate\Support\Str as Strings;
require_once 'config.php';

interface Renderable
{
    public function render(): string;
}

trait Greets
{
    public function greet(string $name): string
    {
        return "Hello " . $name;
    }
}

class UserController implements Renderable
{
    use Greets;

    public function render(): string
    {
        return Strings::upper($this->greet(User::first()->name));
    }
}

function helper(int $x): int
{
    return $x * 2;
}
